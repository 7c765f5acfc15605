package election

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

func TestPodLabelerOrder(t *testing.T) {
	p := newPodLabeler(nil, "ns", "role", logr.Discard(), NewMetrics())
	p.set("me", standby)
	p.set("old-leader", standby)
	p.set("me", leader)
	// The previous leader's demotion goes first; the later value for "me"
	// replaces the unwritten one and goes after it.
	want := []podLabel{{"old-leader", standby}, {"me", leader}}
	if diff := cmp.Diff(want, p.pending, cmp.AllowUnexported(podLabel{})); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	p.keepOnly("me")
	want = []podLabel{{"me", leader}}
	if diff := cmp.Diff(want, p.pending, cmp.AllowUnexported(podLabel{})); diff != "" {
		t.Errorf("after keepOnly (-want +got):\n%s", diff)
	}
}

// labelServer answers pod patches: the pods in answers get those status
// codes, in turn, before a 200; it records the patches that succeeded.
type labelServer struct {
	mu      sync.Mutex
	answers map[string][]int
	written []string
}

func (s *labelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pod := path.Base(r.URL.Path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.answers[pod]; len(a) > 0 {
		s.answers[pod] = a[1:]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a[0])
		reason := metav1.StatusReasonForbidden
		if a[0] != http.StatusForbidden {
			reason = metav1.StatusReasonInternalError
		}
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(a[0]), Reason: reason})
		return
	}
	s.written = append(s.written, pod)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"` + pod + `"}}`))
}

func (s *labelServer) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		got := slices.Clone(s.written)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("labels written: fewer than %d", n)
	return nil
}

func labelerAgainst(t *testing.T, s *labelServer) *podLabeler {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	clients, err := NewClients(&rest.Config{Host: srv.URL}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := newPodLabeler(clients.Core, "ns", "role", logr.Discard(), NewMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go p.run(ctx)
	return p
}

// TestPodLabelerRetriesRefusals: an elector usually starts before the
// injector's grant reaches the API server's RBAC cache, so a Forbidden
// answer is retried until the label is written, and does not hold back
// demotions of other pods.
func TestPodLabelerRetriesRefusals(t *testing.T) {
	s := &labelServer{answers: map[string][]int{"me": {403, 403}}}
	p := labelerAgainst(t, s)
	p.set("me", standby)
	p.set("old-leader", standby)
	if diff := cmp.Diff([]string{"old-leader", "me"}, s.wait(t, 2)); diff != "" {
		t.Errorf("patches written (-want +got):\n%s", diff)
	}
}

// TestPodLabelerRefusedDemotionHoldsPromotion: the grant may reach the API
// server between a refused demotion of the previous leader's pod and the
// new leader's promotion of its own; the promotion waits for the demotion,
// so the two pods never both carry the leader label.
func TestPodLabelerRefusedDemotionHoldsPromotion(t *testing.T) {
	s := &labelServer{answers: map[string][]int{"old-leader": {403, 403}}}
	p := labelerAgainst(t, s)
	p.set("old-leader", standby)
	p.set("me", leader)
	if diff := cmp.Diff([]string{"old-leader", "me"}, s.wait(t, 2)); diff != "" {
		t.Errorf("patches written (-want +got):\n%s", diff)
	}
}

// TestPodLabelerHoldsOrder: any other failure holds back the labels after
// it, so a new leader's pod is not labelled leader while the previous
// leader's may still be.
func TestPodLabelerHoldsOrder(t *testing.T) {
	s := &labelServer{answers: map[string][]int{"old-leader": {500, 503}}}
	p := labelerAgainst(t, s)
	p.set("old-leader", standby)
	p.set("me", leader)
	if diff := cmp.Diff([]string{"old-leader", "me"}, s.wait(t, 2)); diff != "" {
		t.Errorf("patches written (-want +got):\n%s", diff)
	}
}
