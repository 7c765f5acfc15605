package election

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAppHealthVerdict: unhealthy until the first healthy answer, unhealthy
// again only after threshold failures in a row, healthy again after one
// healthy answer; every change is told once.
func TestAppHealthVerdict(t *testing.T) {
	var changes []bool
	reminders := 0
	h := newAppHealth(Config{AppHealthURL: "http://app.invalid/", AppHealthPeriod: time.Second, AppHealthThreshold: 3},
		func(healthy bool, why string) { changes = append(changes, healthy) }, func(error) { reminders++ })
	fail := context.DeadlineExceeded
	for i, step := range []struct {
		err  error
		want bool
	}{
		{fail, false}, {fail, false}, {fail, false}, {fail, false}, // never healthy yet
		{nil, true},
		{fail, true}, {fail, true}, {nil, true}, // two failures, then healthy: reset
		{fail, true}, {fail, true}, {fail, false}, // three in a row
		{fail, false},
		{nil, true},
	} {
		h.record(step.err)
		if got := h.ok(); got != step.want {
			t.Fatalf("after probe %d (%v): healthy %v, want %v", i, step.err, got, step.want)
		}
	}
	if want := []bool{true, false, true}; !slices.Equal(changes, want) {
		t.Errorf("changes told: %v, want %v", changes, want)
	}
	// Unhealthy from the start, the first failure is told: a wrong URL
	// shows in the log at once, not only in the metric.
	if reminders != 1 {
		t.Errorf("%d failures of a never-healthy application told, want 1 (the first)", reminders)
	}
}

// TestAppHealthProbe: 2xx and 3xx are healthy; 4xx, 5xx, an answer slower
// than the period and an application that cannot be reached are not.
func TestAppHealthProbe(t *testing.T) {
	var status atomic.Int32
	var slow atomic.Bool
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			// Judged as it is, not followed to a page that is not there.
			http.Redirect(w, r, "/missing", http.StatusFound)
			return
		}
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		if slow.Load() {
			time.Sleep(300 * time.Millisecond)
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer app.Close()
	h := newAppHealth(Config{AppHealthURL: app.URL + "/healthz", AppHealthPeriod: 100 * time.Millisecond, AppHealthThreshold: 1}, func(bool, string) {}, func(error) {})
	ctx := context.Background()
	for _, code := range []int32{200, 204, 304} {
		status.Store(code)
		if err := h.probe(ctx); err != nil {
			t.Errorf("answer %d: %v, want healthy", code, err)
		}
	}
	for _, code := range []int32{404, 500, 503} {
		status.Store(code)
		if err := h.probe(ctx); err == nil || !strings.Contains(err.Error(), "answered") {
			t.Errorf("answer %d: %v, want an error that names the answer", code, err)
		}
	}
	status.Store(200)
	moved := newAppHealth(Config{AppHealthURL: app.URL + "/moved", AppHealthPeriod: time.Second, AppHealthThreshold: 1}, func(bool, string) {}, func(error) {})
	if err := moved.probe(ctx); err != nil {
		t.Errorf("a redirect: %v, want healthy (3xx is healthy; it is not followed)", err)
	}
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsApp.Close()
	selfSigned := newAppHealth(Config{AppHealthURL: tlsApp.URL + "/healthz", AppHealthPeriod: time.Second, AppHealthThreshold: 1}, func(bool, string) {}, func(error) {})
	if err := selfSigned.probe(ctx); err != nil {
		t.Errorf("https with a self-signed certificate: %v, want healthy, as the kubelet probes", err)
	}
	slow.Store(true)
	if err := h.probe(ctx); err == nil {
		t.Errorf("an answer slower than the period: healthy, want unhealthy")
	}
	slow.Store(false)
	app.Close()
	if err := h.probe(ctx); err == nil {
		t.Errorf("an application that cannot be reached: healthy, want unhealthy")
	}
}

func TestValidateAppHealthURL(t *testing.T) {
	for _, ok := range []string{"http://localhost:8080/healthz", "https://127.0.0.1/ready?full=1"} {
		if err := ValidateAppHealthURL(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"localhost:8080/healthz", "ftp://localhost/", "http:///healthz", "http://[::1"} {
		if err := ValidateAppHealthURL(bad); err == nil || !strings.Contains(err.Error(), "example: http://localhost:8080/healthz") {
			t.Errorf("%s: %v, want an error with an example", bad, err)
		}
	}
}

// TestUnhealthyIsNotLeader: a leader whose application is judged unhealthy
// says is_leader=false at once, before its loop releases the lock (it may
// be waiting on a renewal).
func TestUnhealthyIsNotLeader(t *testing.T) {
	h := &appHealth{}
	e := &Elector{cfg: Config{ID: "a", RenewDeadline: time.Minute}, leading: true, renewedAt: time.Now(), health: h}
	for _, healthy := range []bool{true, false, true} {
		h.mu.Lock()
		h.healthy = healthy
		h.mu.Unlock()
		if got := e.Status().IsLeader; got != healthy {
			t.Errorf("application healthy %v: is_leader %v", healthy, got)
		}
	}
}
