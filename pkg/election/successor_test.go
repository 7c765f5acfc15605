package election

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseCandidate(t *testing.T) {
	tests := []struct {
		value string
		want  candidate
		ok    bool
	}{
		{"1700000000000/web-0", candidate{joined: 1700000000000, id: "web-0"}, true},
		{"1700000000000/a/b", candidate{joined: 1700000000000, id: "a/b"}, true},
		{"return/10000/db-2", candidate{id: "db-2", returnWait: 10 * time.Second}, true},
		{"return/1/x/y", candidate{id: "x/y", returnWait: time.Millisecond}, true},
		{"return/0/db-2", candidate{}, false},
		{"return/-5/db-2", candidate{}, false},
		{"return/9223372036854775807/x", candidate{}, false},
		{"return/10000/", candidate{}, false},
		{"return/", candidate{}, false},
		{"return/return/5/x", candidate{}, false},
		{"", candidate{}, false},
		{"web-0", candidate{}, false},
		{"soon/web-0", candidate{}, false},
	}
	for _, tt := range tests {
		got, ok := parseCandidate(tt.value)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseCandidate(%q) = %+v, %t; want %+v, %t", tt.value, got, ok, tt.want, tt.ok)
		}
		if ok {
			if again, _ := parseCandidate(got.String()); again != got {
				t.Errorf("parseCandidate(%q).String() = %q, which reads back as %+v", tt.value, got.String(), again)
			}
		}
	}
	// A returning leader ranks below every participant that joined.
	if back := (candidate{id: "db-2", returnWait: time.Second}); back.newerThan(candidate{joined: 1, id: "a"}) {
		t.Error("a returning leader ranks above a participant that joined")
	}
}

// TestYieldLeft: how long a follower leaves a released lock to the
// successor named on it.
func TestYieldLeft(t *testing.T) {
	observed := time.Unix(1700000000, 0)
	released := func(successor string) *observation {
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{}}}
		if successor != "" {
			lease.Annotations[AnnotationSuccessor] = successor
		}
		return &observation{object: lease}
	}
	held := released("return/4000/a")
	held.record.HolderIdentity = "b"

	cfg := Config{ID: "c", TTL: 4 * time.Second, RetryPeriod: 400 * time.Millisecond, PreferNewest: true}
	racing := cfg
	racing.PreferNewest = false
	tests := []struct {
		name  string
		cfg   Config
		obs   *observation
		after time.Duration
		want  time.Duration
	}{
		{"named successor", cfg, released("1/b"), 0, 100 * time.Millisecond},
		{"named successor, grace partly over", cfg, released("1/b"), 60 * time.Millisecond, 40 * time.Millisecond},
		{"named successor, grace over", cfg, released("1/b"), time.Second, 0},
		{"this follower is the successor", cfg, released("1/c"), 0, 0},
		{"none named", cfg, released(""), 0, 0},
		{"without -prefer-newest", racing, released("1/b"), 0, 0},
		{"a leader coming back", cfg, released("return/3000/a"), 0, 3 * time.Second},
		{"a leader coming back, without -prefer-newest", racing, released("return/3000/a"), time.Second, 2 * time.Second},
		{"a leader coming back, at most the TTL", cfg, released("return/60000/a"), 0, 4 * time.Second},
		{"the leader that comes back", Config{ID: "a", TTL: 4 * time.Second, RetryPeriod: 400 * time.Millisecond}, released("return/3000/a"), 0, 0},
		{"a held lock", cfg, held, 0, 0},
	}
	for _, tt := range tests {
		e := &Elector{cfg: tt.cfg}
		if got := e.yieldLeft(tt.obs, observed, observed.Add(tt.after)); got != tt.want {
			t.Errorf("%s: yieldLeft = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// TestLeavingToReturn: the release of a leader with a return wait names it
// the successor, over whoever was named, and changes nothing else.
func TestLeavingToReturn(t *testing.T) {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
		ResourceVersion: "7",
		Annotations:     map[string]string{AnnotationSuccessor: "1700000000000/b", "example.com/keep": "yes"},
	}}
	obs := &observation{object: lease, record: Record{HolderIdentity: "a"}, epoch: 3}
	e := &Elector{cfg: Config{ID: "a", ReturnWait: 10 * time.Second}}
	got := e.leavingToReturn(obs)
	want := map[string]string{AnnotationSuccessor: "return/10000/a", "example.com/keep": "yes"}
	if a := got.object.GetAnnotations(); len(a) != len(want) || a[AnnotationSuccessor] != want[AnnotationSuccessor] || a["example.com/keep"] != "yes" {
		t.Errorf("annotations = %v, want %v", a, want)
	}
	if got.object.GetResourceVersion() != "7" || got.record != obs.record || got.epoch != 3 {
		t.Errorf("leavingToReturn changed the version, record or epoch: %+v", got)
	}
	if lease.Annotations[AnnotationSuccessor] != "1700000000000/b" {
		t.Error("leavingToReturn changed the observation it was given")
	}
}

// FuzzParseCandidate: the successor annotation is anyone's to write on the
// lock; reading it never panics, and what it accepts writes back as itself
// and reads back the same.
//
//	go test -run '^$' -fuzz FuzzParseCandidate -fuzztime 1m -fuzzminimizetime 5s ./pkg/election/ (or make fuzz)
func FuzzParseCandidate(f *testing.F) {
	for _, seed := range []string{"1700000000000/web-0", "return/10000/db-2", "return/0/x", "-5/x", "return/return/1/x", "9223372036854775807/x", "return/9223372036854775807/x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, ok := parseCandidate(v)
		if !ok {
			return
		}
		if c.id == "" || c.returnWait < 0 {
			t.Fatalf("parseCandidate(%q) = %+v", v, c)
		}
		again, ok := parseCandidate(c.String())
		if !ok || again != c {
			t.Fatalf("parseCandidate(%q) = %+v, written as %q, reads back as %+v, %t", v, c, c.String(), again, ok)
		}
	})
}

// TestWriteDropsSpentSuccessors: a write that takes the lock drops a
// successor it spends (the one named took it) and a return left by a leader
// that did not come back (anyone took it); a release, or another holder
// over a participant named the usual way, keeps the successor named.
func TestWriteDropsSpentSuccessors(t *testing.T) {
	tests := []struct {
		successor, holder string
		kept              bool
	}{
		{"1700000000000/b", "b", false},
		{"1700000000000/b", "c", true},
		{"1700000000000/b", "", true},
		{"return/10000/a", "a", false},
		{"return/10000/a", "c", false},
		{"return/10000/a", "", true},
	}
	for _, tt := range tests {
		l := &recordLock{namespace: "ns", name: "e", kind: leaseKind}
		obj := leaseKind.newObject()
		obj.SetAnnotations(map[string]string{AnnotationSuccessor: tt.successor})
		if err := l.write(obj, Record{HolderIdentity: tt.holder, LeaseDurationSeconds: 10}, 0); err != nil {
			t.Fatal(err)
		}
		if _, kept := obj.GetAnnotations()[AnnotationSuccessor]; kept != tt.kept {
			t.Errorf("successor %q, written with holder %q: kept %t, want %t", tt.successor, tt.holder, kept, tt.kept)
		}
	}
}
