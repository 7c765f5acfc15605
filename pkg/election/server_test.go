package election

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
)

// electorFor returns an elector in the given state, without a loop: what
// GET / reports depends only on these fields and the clock.
func electorFor(id string, leading bool, holder string) *Elector {
	e := &Elector{cfg: Config{ID: id, TTL: 10 * time.Second, RenewDeadline: 5 * time.Second}}
	now := time.Now()
	if leading {
		e.leading, e.renewedAt, e.epoch = true, now, 1<<40+7
	}
	if holder != "" {
		e.observed = &observation{record: Record{HolderIdentity: holder, LeaseDurationSeconds: 10}, object: &coordinationv1.Lease{}, epoch: 1<<40 + 7}
		e.observedAt = now
	}
	return e
}

// getStatus serves one GET / and returns the response and the time span in
// which it was made.
func getStatus(t *testing.T, s *Server) (*httptest.ResponseRecorder, time.Time, time.Time) {
	t.Helper()
	w := httptest.NewRecorder()
	before := time.Now()
	s.server.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathStatus, nil))
	return w, before, time.Now()
}

// upstreamDocument is upstream k8s-elector's GET / body: json.Marshal of a
// map, which sorts the keys and escapes HTML, with this implementation's
// trailing newline.
func upstreamDocument(t *testing.T, isLeader bool, leader, node, timestamp string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"node": node, "leader": leader, "is_leader": isLeader, "timestamp": timestamp})
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// withEpoch is upstream's document with the epoch added after its fields.
func withEpoch(doc string, epoch uint64) string {
	return strings.TrimSuffix(doc, "}\n") + `,"epoch":` + strconv.FormatUint(epoch, 10) + "}\n"
}

// TestStatusDocument checks GET / byte for byte against upstream's
// encoding, for a leader, a follower, a participant that sees no leader,
// and IDs that JSON must escape: upstream's fields as upstream wrote them,
// and the epoch after them.
func TestStatusDocument(t *testing.T) {
	for _, tc := range []struct {
		name         string
		e            *Elector
		wantIsLeader bool
		wantLeader   string
		wantEpoch    uint64
	}{
		{"leader", electorFor("a", true, "a"), true, "a", 1<<40 + 7},
		{"follower", electorFor("b", false, "a"), false, "a", 1<<40 + 7},
		{"no leader", electorFor("c", false, ""), false, "", 0},
		{"escaped IDs", electorFor(`p<1>&"q"`, false, `l\<2>`), false, `l\<2>`, 1<<40 + 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(tc.e, NewMetrics())
			for range 2 { // encoded, then reused
				w, before, after := getStatus(t, s)
				if w.Code != http.StatusOK {
					t.Fatalf("status %d", w.Code)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
				var got Status
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
					t.Fatalf("%q: %v", w.Body.String(), err)
				}
				at, err := time.Parse(time.RFC3339, got.Timestamp)
				if err != nil || at.Location() != time.UTC {
					t.Fatalf("timestamp %q is not RFC3339 UTC: %v", got.Timestamp, err)
				}
				if at.Before(before.Truncate(time.Second)) || at.After(after) {
					t.Errorf("timestamp %s is not between %s and %s", at, before, after)
				}
				want := withEpoch(upstreamDocument(t, tc.wantIsLeader, tc.wantLeader, tc.e.cfg.ID, got.Timestamp), tc.wantEpoch)
				if diff := cmp.Diff(want, w.Body.String()); diff != "" {
					t.Errorf("GET / differs from upstream's document (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestStatusFollowsElection changes the election between two requests in
// the same second: the second answer must not be the first one's bytes.
func TestStatusFollowsElection(t *testing.T) {
	e := electorFor("a", true, "a")
	s := NewServer(e, NewMetrics())
	for _, step := range []struct {
		name    string
		change  func()
		leading bool
		leader  string
	}{
		{"leads", func() {}, true, "a"},
		{"renew deadline passed", func() { e.renewedAt = time.Now().Add(-e.cfg.RenewDeadline) }, false, "a"},
		{"another holder", func() {
			e.leading = false
			e.observed = &observation{record: Record{HolderIdentity: "b", LeaseDurationSeconds: 10}, object: &coordinationv1.Lease{}}
		}, false, "b"},
		{"lease ran out", func() { e.observedAt = time.Now().Add(-10 * time.Second) }, false, ""},
		{"leads again", func() { e.leading, e.renewedAt = true, time.Now() }, true, "a"},
		{"not yet a TTL after making the lock", func() { e.claimAt = time.Now().Add(time.Hour) }, false, ""},
	} {
		e.mu.Lock()
		step.change()
		e.mu.Unlock()
		w, _, _ := getStatus(t, s)
		var got Status
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %q: %v", step.name, w.Body.String(), err)
		}
		if got.IsLeader != step.leading || got.Leader != step.leader {
			t.Errorf("%s: is_leader=%v leader=%q, want %v %q", step.name, got.IsLeader, got.Leader, step.leading, step.leader)
		}
	}
}

// TestStatusTimestampAdvances checks that a reused answer is not served past
// its second.
func TestStatusTimestampAdvances(t *testing.T) {
	s := NewServer(electorFor("a", false, ""), NewMetrics())
	first, _, _ := getStatus(t, s)
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	second, before, _ := getStatus(t, s)
	var a, b Status
	if err := json.Unmarshal(first.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(second.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	// RFC3339 UTC timestamps of whole seconds sort as strings.
	if b.Timestamp <= a.Timestamp || b.Timestamp < timestamp(before) {
		t.Errorf("timestamps %s then %s across a second boundary (second request at %s)", a.Timestamp, b.Timestamp, before.UTC())
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so that the
// allocations measured are the handler's own.
type discardWriter struct{ header http.Header }

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// TestStatusAllocations checks that GET / allocates nothing while its answer
// holds: the endpoint is polled by every client of the elector, and its
// garbage is what sets the elector's memory under load.
func TestStatusAllocations(t *testing.T) {
	s := NewServer(electorFor("a", true, "a"), NewMetrics())
	w := &discardWriter{header: http.Header{"Content-Type": nil}}
	r := httptest.NewRequest(http.MethodGet, PathStatus, nil)
	var allocs float64
	// A run that crosses a second boundary encodes once; three in a row
	// cannot all cross one.
	for range 3 {
		if allocs = testing.AllocsPerRun(1000, func() { s.status(w, r) }); allocs == 0 {
			break
		}
	}
	if allocs != 0 {
		t.Errorf("GET / allocates %.2f times per request, want 0", allocs)
	}
	if !strings.Contains(w.header.Get("Content-Type"), "json") {
		t.Errorf("Content-Type = %q", w.header.Get("Content-Type"))
	}
}

// BenchmarkStatus serves GET / from parallel goroutines, as concurrent
// probes do, through the server's whole handler chain.
func BenchmarkStatus(b *testing.B) {
	s := NewServer(electorFor("a", true, "a"), NewMetrics())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{header: http.Header{}}
		r := httptest.NewRequest(http.MethodGet, PathStatus, nil)
		for pb.Next() {
			s.server.Handler.ServeHTTP(w, r)
		}
	})
}

// TestLeaderEpochHeader: /leader carries the epoch in a header, on the
// leader's 200 and on a follower's 503 alike, so a proxy can fence by it
// without reading the body.
func TestLeaderEpochHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    *Elector
		code int
	}{
		{"leader", electorFor("a", true, "a"), http.StatusOK},
		{"follower", electorFor("b", false, "a"), http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(tc.e, NewMetrics())
			w := httptest.NewRecorder()
			s.server.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathLeader, nil))
			if w.Code != tc.code {
				t.Errorf("status %d, want %d", w.Code, tc.code)
			}
			if got, want := w.Header().Get(HeaderEpoch), strconv.FormatUint(1<<40+7, 10); got != want {
				t.Errorf("%s = %q, want %q", HeaderEpoch, got, want)
			}
		})
	}
}
