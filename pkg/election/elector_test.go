package election

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// TestLeaseLeft: how long a follower waits before it may take the lock, by
// what it last observed: nothing, until the lease of the holder named runs
// out from when it was observed, never shorter than its own TTL.
func TestLeaseLeft(t *testing.T) {
	now := time.Now()
	const ttl = 10 * time.Second
	held := func(holder string, leaseSeconds int) *observation {
		return &observation{object: leaseKind.newObject(), record: Record{HolderIdentity: holder, LeaseDurationSeconds: leaseSeconds}}
	}
	garbled := held("", 0)
	garbled.readErr = errors.New("not a record")
	for _, tc := range []struct {
		name       string
		obs        *observation
		observedAt time.Time
		want       time.Duration
	}{
		{"nothing seen: read it now", nil, now, 0},
		{"the lock is missing: make it now", &observation{}, now, 0},
		{"released", held("", 1), now, 0},
		{"held, just renewed", held("other", 10), now, ttl},
		{"held, renewed 4s ago", held("other", 10), now.Add(-4 * time.Second), 6 * time.Second},
		{"held, run out", held("other", 10), now.Add(-11 * time.Second), -time.Second},
		{"a longer lease than the TTL", held("other", 30), now.Add(-4 * time.Second), 26 * time.Second},
		{"a shorter lease than the TTL: the TTL", held("other", 1), now, ttl},
		{"its own ID, written by another process", held("me", 10), now, ttl},
		{"a record that cannot be read: held for the TTL", garbled, now, ttl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Elector{cfg: Config{ID: "me", TTL: ttl}}
			if got := e.leaseLeft(tc.obs, tc.observedAt, now); got != tc.want {
				t.Errorf("leaseLeft = %s, want %s", got, tc.want)
			}
		})
	}
}

// The tests below take the lock once each, against a small Lease server,
// at the instants where the watch or a lost answer can change what the
// attempt sees.

// leaseServer holds one Lease and does compare-and-swap on PUT.
type leaseServer struct {
	mu    sync.Mutex
	lease coordinationv1.Lease
	puts  []string // resourceVersion each successful PUT was sent over
}

func (s *leaseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodGet:
		_ = json.NewEncoder(w).Encode(&s.lease)
	case http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		var in coordinationv1.Lease
		if err := json.Unmarshal(b, &in); err != nil {
			w.WriteHeader(400)
			return
		}
		if in.ResourceVersion != s.lease.ResourceVersion {
			w.WriteHeader(409)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Code: 409, Reason: metav1.StatusReasonConflict})
			return
		}
		s.puts = append(s.puts, in.ResourceVersion)
		rv, _ := strconv.Atoi(s.lease.ResourceVersion)
		in.ResourceVersion = strconv.Itoa(rv + 1)
		in.UID = s.lease.UID
		in.APIVersion, in.Kind = "coordination.k8s.io/v1", "Lease"
		s.lease = in
		_ = json.NewEncoder(w).Encode(&s.lease)
	default:
		w.WriteHeader(405)
	}
}

// hookCtx runs hook once, the first time the code under test asks for the
// context's deadline: context.WithTimeout asks, between the attempt's
// judgement and its write.
type hookCtx struct {
	context.Context
	once sync.Once
	hook func()
}

func (c *hookCtx) Deadline() (time.Time, bool) {
	c.once.Do(c.hook)
	return c.Context.Deadline()
}

func attemptElector(t *testing.T, url, id string) *Elector {
	t.Helper()
	clients, err := NewClients(&rest.Config{Host: url, ContentConfig: rest.ContentConfig{ContentType: runtime.ContentTypeJSON}}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Election: "e", Namespace: "ns", ID: id, LockType: LockLeases,
		TTL: 10 * time.Second, RenewDeadline: 7 * time.Second, RetryPeriod: 2 * time.Second}, clients, logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestAttemptWritesOverTheVersionItJudged: a follower judged an expired
// lease, and its watch delivered the winner's fresh version before it
// wrote. Written over that version, the compare-and-swap succeeded and took
// a lease just begun: two leaders. The attempt must write over the version
// whose lease it judged, and fail.
func TestAttemptWritesOverTheVersionItJudged(t *testing.T) {
	old := metav1.NewMicroTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	holder, dur := "old", int32(10)
	s := &leaseServer{lease: coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns", UID: types.UID("u"), ResourceVersion: "1"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &old, RenewTime: &old},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()

	// Both followers saw V1 (holder "old") an hour ago: its lease is over.
	v1 := s.lease.DeepCopy()
	w := attemptElector(t, srv.URL, "w")
	f := attemptElector(t, srv.URL, "f")
	for _, e := range []*Elector{w, f} {
		e.observed, e.observedAt = e.lock.observe(v1.DeepCopy()), time.Now().Add(-time.Hour)
	}

	// w wins the race: V2, holder w.
	ok, _ := w.tryAcquire(context.Background())
	if !ok || !w.IsLeader() {
		t.Fatalf("w did not take the expired lock")
	}
	v2 := w.mine.object.DeepCopyObject().(object)

	// f wakes at the same moment. Its watch delivers V2 right after f
	// judged the lease (on V1) and before it picks the version to write
	// over.
	ctx := &hookCtx{Context: context.Background(), hook: func() { f.observe(f.lock.observe(v2)) }}
	ok, _ = f.tryAcquire(ctx)
	if ok && f.IsLeader() && w.IsLeader() {
		t.Fatalf("two leaders: f took over w's fresh lease (observed %s before) while w calls itself leader until its renew deadline",
			time.Since(f.observedAt).Round(time.Millisecond))
	}
}

// TestAdoptConflictReads: a follower found its own write in the lock (V2,
// whose answer it lost) and adopts it, but another participant has written
// over it since (V3) and the follower's watch brings nothing. Its adopting
// write conflicts; it must then read the lock, not adopt V2 again and again.
func TestAdoptConflictReads(t *testing.T) {
	lease := func(rv, holder string, at time.Time) *coordinationv1.Lease {
		mt, d := metav1.NewMicroTime(at.Truncate(time.Second)), int32(10)
		return &coordinationv1.Lease{
			TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
			ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns", UID: types.UID("u"), ResourceVersion: rv},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, AcquireTime: &mt, RenewTime: &mt},
		}
	}
	long := time.Now().Add(-time.Minute)
	// The lock is at V3: g took it over f's landed write V2. g has since
	// died; its lease ran out long ago.
	s := &leaseServer{lease: *lease("3", "g", long)}
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			gets.Add(1)
		}
		s.ServeHTTP(w, r)
	}))
	defer srv.Close()

	f := attemptElector(t, srv.URL, "f")
	v1 := f.lock.observe(lease("1", "old", long.Add(-time.Minute)))
	v2 := f.lock.observe(lease("2", "f", long))
	// f sent V2's record over V1; the write landed, its answer was lost. f
	// saw V2 (then its watch broke silently: V3 never came).
	f.sent(sentWrite{record: v2.record, over: v1, previousPod: "old"})
	f.observed, f.observedAt = v2, long

	for i := 0; i < 20; i++ {
		ok, _ := f.tryAcquire(context.Background())
		if ok {
			t.Fatalf("attempt %d: took the lock", i)
		}
		if f.observed.record.HolderIdentity == "g" {
			return
		}
	}
	t.Errorf("after 20 attempts f still judges V2, its own lost write, and adopts it over and over: %d GETs sent", gets.Load())
}

// TestAdoptOfARenewalKeepsTheClaim: a participant made the lock, and its
// first renewal landed with its answer lost; it stepped down over the
// record it could not tell from another process's, then took that renewal
// back. It may still call itself leader only a full TTL after it made the
// lock: a leader of a deleted lock may be cut off and believe it leads.
func TestAdoptOfARenewalKeepsTheClaim(t *testing.T) {
	var mu sync.Mutex
	var lease *coordinationv1.Lease
	rv := 0
	puts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		w.Header().Set("Content-Type", "application/json")
		notFound := func() {
			w.WriteHeader(404)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 404, Reason: metav1.StatusReasonNotFound})
		}
		if r.URL.Path != "/apis/coordination.k8s.io/v1/namespaces/ns/leases" && r.URL.Path != "/apis/coordination.k8s.io/v1/namespaces/ns/leases/e" {
			mu.Unlock()
			notFound()
			return
		}
		switch r.Method {
		case http.MethodGet:
			if lease == nil {
				mu.Unlock()
				notFound()
				return
			}
			_ = json.NewEncoder(w).Encode(lease)
		case http.MethodPost, http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			var in coordinationv1.Lease
			_ = json.Unmarshal(b, &in)
			if r.Method == http.MethodPut && (lease == nil || in.ResourceVersion != lease.ResourceVersion) {
				w.WriteHeader(409)
				_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: 409, Reason: metav1.StatusReasonConflict})
				mu.Unlock()
				return
			}
			rv++
			in.ResourceVersion, in.UID = strconv.Itoa(rv), "u"
			in.APIVersion, in.Kind = "coordination.k8s.io/v1", "Lease"
			lease = &in
			if r.Method == http.MethodPut {
				puts++
				if puts == 1 {
					// The first renewal lands; its answer is lost.
					mu.Unlock()
					time.Sleep(time.Second)
					return
				}
			}
			_ = json.NewEncoder(w).Encode(lease)
		}
		mu.Unlock()
	}))
	defer srv.Close()

	p := attemptElector(t, srv.URL, "p")
	ctx := context.Background()
	// The lock is missing: p makes it.
	if err := p.read(ctx); err != nil {
		t.Fatal(err)
	}
	ok, _ := p.tryAcquire(ctx)
	if !ok {
		t.Fatal("p did not make the lock")
	}
	p.mu.Lock()
	made := p.claimAt // a TTL after the create was answered
	p.mu.Unlock()
	// First renewal: lands, answer lost.
	for {
		mu.Lock()
		n := puts
		mu.Unlock()
		if n > 0 {
			break
		}
		wait, lost := p.renew(ctx, time.Now().Add(200*time.Millisecond))
		if lost != "" {
			t.Fatal(lost)
		}
		time.Sleep(min(wait, 300*time.Millisecond))
	}
	time.Sleep(1100 * time.Millisecond)
	_, lost := p.renew(ctx, time.Now().Add(5*time.Second))
	if lost == "" {
		t.Fatal("expected p to step down over its lost renewal")
	}
	p.mu.Lock()
	p.leading = false
	p.mu.Unlock()
	for i := 0; i < 10; i++ {
		ok, wait := p.tryAcquire(ctx)
		if ok {
			break
		}
		time.Sleep(wait)
	}
	p.mu.Lock()
	claimAt, leading := p.claimAt, p.leading
	p.mu.Unlock()
	if !leading {
		t.Fatal("p did not adopt")
	}
	if claimAt.Before(made) {
		t.Errorf("p may lead %s after it took its renewal back, %s before a TTL (%s) has passed since it made the lock",
			time.Until(claimAt).Round(time.Millisecond), made.Sub(claimAt).Round(time.Millisecond), p.cfg.TTL)
	}
}
