package election

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

func TestPodLabelerOrder(t *testing.T) {
	p := newPodLabeler(nil, "ns", "role", false, "me", logr.Discard(), NewMetrics())
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
// codes, in turn, before a 200; it records the patches that succeeded. It
// answers a GET of a pod with the label role from labels.
type labelServer struct {
	mu      sync.Mutex
	answers map[string][]int
	labels  map[string]string
	written []string
	refused int
}

func (s *labelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pod := path.Base(r.URL.Path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Pod", "apiVersion": "v1",
			"metadata": map[string]any{"name": pod, "labels": map[string]string{"role": s.labels[pod]}}})
		return
	}
	if a := s.answers[pod]; len(a) > 0 {
		s.refused++
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
	var patch struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	_ = json.NewDecoder(r.Body).Decode(&patch)
	if s.labels == nil {
		s.labels = map[string]string{}
	}
	s.labels[pod] = patch.Metadata.Labels["role"]
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
	p := newPodLabeler(clients.Core, "ns", "role", false, "me", logr.Discard(), NewMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go p.run(ctx)
	return p
}

// TestPodLabelerWrites: the order labels reach the API server in, when
// some patches fail at first.
func TestPodLabelerWrites(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers map[string][]int
		labels  map[string]string // on the pods before
		set     []podLabel
		want    []string
	}{{
		// An elector usually starts before the injector's grant reaches
		// the API server's RBAC cache: a Forbidden answer is retried until
		// the label is written, and does not hold back demotions of other
		// pods.
		name:    "a refusal is retried, and demotions go past it",
		answers: map[string][]int{"me": {403, 403}},
		set:     []podLabel{{"me", standby}, {"old-leader", standby}},
		want:    []string{"old-leader", "me"},
	}, {
		// The grant may reach the API server between a refused demotion
		// of the previous leader's pod and the new leader's promotion of
		// its own: the promotion waits, so two pods never both carry the
		// leader label.
		name:    "a refused demotion holds the promotion",
		answers: map[string][]int{"old-leader": {403, 403}},
		labels:  map[string]string{"old-leader": leader},
		set:     []podLabel{{"old-leader", standby}, {"me", leader}},
		want:    []string{"old-leader", "me"},
	}, {
		// Any other failure holds back the labels after it.
		name:    "a failure holds the labels after it",
		answers: map[string][]int{"old-leader": {500, 503}},
		set:     []podLabel{{"old-leader", standby}, {"me", leader}},
		want:    []string{"old-leader", "me"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := &labelServer{answers: tc.answers, labels: tc.labels}
			p := labelerAgainst(t, s)
			for _, l := range tc.set {
				p.set(l.pod, l.value)
			}
			if diff := cmp.Diff(tc.want, s.wait(t, len(tc.want))); diff != "" {
				t.Errorf("patches written (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPodLabelerRefusedDemotionOfAnUnlabelledPod: a demotion refused for
// good (the previous holder's pod is an upstream participant's, or uses
// another label key, and the policy keeps this participant from labelling
// it) does not hold the promotion when that pod does not carry the leader
// label; while it does, it holds it.
func TestPodLabelerRefusedDemotionOfAnUnlabelledPod(t *testing.T) {
	forever := slices.Repeat([]int{403}, 1000)
	s := &labelServer{answers: map[string][]int{"old-leader": forever}, labels: map[string]string{"old-leader": standby}}
	p := labelerAgainst(t, s)
	p.set("old-leader", standby)
	p.set("me", leader)
	if diff := cmp.Diff([]string{"me"}, s.wait(t, 1)); diff != "" {
		t.Errorf("patches written (-want +got):\n%s", diff)
	}

	s = &labelServer{answers: map[string][]int{"old-leader": forever}, labels: map[string]string{"old-leader": leader}}
	p = labelerAgainst(t, s)
	p.set("old-leader", standby)
	p.set("me", leader)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		refused, written := s.refused, slices.Clone(s.written)
		s.mu.Unlock()
		if len(written) > 0 {
			t.Fatalf("patches written %v while the previous leader's pod still carries the leader label", written)
		}
		if refused >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPodLabelerPatchBody: what one patch writes, with -pod-label,
// -pod-deletion-cost or both: the deletion cost goes on its own pod only,
// and a pod with nothing to write is not patched.
func TestPodLabelerPatchBody(t *testing.T) {
	tests := []struct {
		key        string
		cost       bool
		pod, value string
		want       string // "" for no request
	}{
		{"role", false, "me", leader, `{"metadata":{"labels":{"role":"leader"}}}`},
		{"role", true, "me", leader, `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"2147483647"},"labels":{"role":"leader"}}}`},
		{"role", true, "me", standby, `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null},"labels":{"role":"standby"}}}`},
		{"role", true, "old-leader", standby, `{"metadata":{"labels":{"role":"standby"}}}`},
		{"", true, "me", leader, `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"2147483647"}}}`},
		{"", true, "me", standby, `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null}}}`},
		{"", true, "old-leader", standby, ""},
	}
	for _, tt := range tests {
		var got []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			got = append(got, r.Method+" "+r.URL.Path+" "+string(body))
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}`))
		}))
		clients, err := NewClients(&rest.Config{Host: srv.URL}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		p := newPodLabeler(clients.Core, "ns", tt.key, tt.cost, "me", logr.Discard(), NewMetrics())
		if err := p.patch(context.Background(), tt.pod, tt.value); err != nil {
			t.Errorf("%+v: %v", tt, err)
		}
		srv.Close()
		var want []string
		if tt.want != "" {
			want = []string{"PATCH /api/v1/namespaces/ns/pods/" + tt.pod + " " + tt.want}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("key %q, cost %t, %s %s: requests (-want +got):\n%s", tt.key, tt.cost, tt.pod, tt.value, diff)
		}
	}
}

// TestPodLabelerCostRefused: when the deletion cost is refused with the
// label, the label is written alone.
func TestPodLabelerCostRefused(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, string(body))
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), AnnotationPodDeletionCost) {
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden})
			return
		}
		_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"me"}}`))
	}))
	defer srv.Close()
	clients, err := NewClients(&rest.Config{Host: srv.URL}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := newPodLabeler(clients.Core, "ns", "role", true, "me", logr.Discard(), NewMetrics())
	if err := p.patch(context.Background(), "me", leader); err != nil {
		t.Fatalf("patch: %v", err)
	}
	want := []string{
		`{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"2147483647"},"labels":{"role":"leader"}}}`,
		`{"metadata":{"labels":{"role":"leader"}}}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patches (-want +got):\n%s", diff)
	}
}
