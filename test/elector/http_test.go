package elector

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestHTTPAPI checks every endpoint of the elector's HTTP API on a leader
// and a follower, the values of its counters, and the /watch stream across
// a handover.
func TestHTTPAPI(t *testing.T) {
	ns := env.Namespace(t)
	args := electionArgs(ns, std)
	w := newWatcher(t, std.gap())
	a := w.start("a", adminKubeconfig, args...)
	w.waitLeader(settle, a)
	b := w.start("b", adminKubeconfig, args...)
	w.waitLeader(settle, a, b)

	do := func(p *participant, method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+p.addr+path, nil)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		p            *participant
		method, path string
		code         int
		contains     string
	}{
		{a, "GET", "/", 200, `"is_leader":true,"leader":"a","node":"a","timestamp":"`},
		{b, "GET", "/", 200, `"is_leader":false,"leader":"a","node":"b","timestamp":"`},
		{a, "GET", "/leader", 200, `"is_leader":true`},
		{b, "GET", "/leader", 503, `"is_leader":false`},
		{a, "GET", "/healthz", 200, "ok"},
		{b, "GET", "/readyz", 200, "ok"},
		{a, "GET", "/metrics", 200, "elector_is_leader 1"},
		{b, "GET", "/metrics", 200, "elector_is_leader 0"},
		{a, "GET", "/metrics", 200, "process_resident_memory_bytes"},
		{a, "POST", "/", 405, "method not allowed"},
		{a, "DELETE", "/leader", 405, "method not allowed"},
		{a, "GET", "/nope", 404, "not found"},
	}
	for _, tt := range tests {
		code, body := do(tt.p, tt.method, tt.path)
		if code != tt.code || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s on %s = %d %q, want %d containing %q", tt.method, tt.path, tt.p.id, code, body, tt.code, tt.contains)
		}
	}
	var st election.Status
	_, body := do(a, "GET", "/")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if ts, err := time.Parse(time.RFC3339, st.Timestamp); err != nil || ts.Location() != time.UTC {
		t.Errorf("timestamp %q is not RFC3339 UTC: %v", st.Timestamp, err)
	}

	// The counters: the leader renews every retry period, and its last
	// renewal is recent; the follower has seen a leader.
	renewals := func() float64 {
		return metricValue(t, a, `elector_renew_duration_seconds_count{result="success"}`)
	}
	before := renewals()
	eventually(t, 2*std.retry+loadSlack, func() error {
		if n := renewals(); n <= before {
			return errNotYet("no renewal counted since " + strconv.FormatFloat(n, 'g', -1, 64))
		}
		return nil
	})
	if last := metricValue(t, a, "elector_last_renew_timestamp_seconds"); time.Since(time.Unix(int64(last), 0)) > std.renew+loadSlack {
		t.Errorf("elector_last_renew_timestamp_seconds = %v, more than the renew deadline ago", last)
	}
	seen := metricValue(t, b, "elector_leader_transitions_total")
	if seen < 1 {
		t.Errorf("elector_leader_transitions_total on the follower = %v, want at least 1 (it has seen a leader)", seen)
	}

	// /watch on the follower: the current document at once, then the
	// handover when the leader stops.
	resp, err := http.Get("http://" + b.addr + "/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("/watch Content-Type = %q", ct)
	}
	events := make(chan election.Status, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var s election.Status
				if json.Unmarshal([]byte(data), &s) == nil {
					events <- s
				}
			}
		}
		close(events)
	}()
	next := func() election.Status {
		t.Helper()
		select {
		case s, ok := <-events:
			if !ok {
				t.Fatal("/watch stream ended")
			}
			return s
		case <-time.After(std.ttl + loadSlack):
			t.Fatal("no /watch event")
		}
		return election.Status{}
	}
	if s := next(); s.IsLeader || s.Leader != "a" {
		t.Errorf("first /watch event = %+v, want a leading", s)
	}
	if _, err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit: %v", err)
	}
	for {
		s := next()
		if s.IsLeader && s.Leader == "b" {
			break
		}
	}
	if n := metricValue(t, b, "elector_leader_transitions_total"); n <= seen {
		t.Errorf("elector_leader_transitions_total on b = %v after the handover, want more than %v", n, seen)
	}
	if v := metricValue(t, b, "elector_is_leader"); v != 1 {
		t.Errorf("elector_is_leader on the new leader = %v, want 1", v)
	}
}

// metricValue reads one sample of p's /metrics as a number. A missing one
// is 0 (a histogram has no samples before its first observation).
func metricValue(t *testing.T, p *participant, name string) float64 {
	t.Helper()
	s := p.metric(t, name)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("metric %s on %s = %q: %v", name, p.id, s, err)
	}
	return v
}

// TestJSONLogsAndSIGINT runs an elector with -log-format=json and stops it
// with SIGINT: every line it logs is a JSON object, and SIGINT hands over
// like SIGTERM: the lock released, an Event posted, exit status 0.
func TestJSONLogsAndSIGINT(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	args := electionArgs(ns, std, "-log-format=json")
	a := w.start("a", adminKubeconfig, args...)
	w.waitLeader(settle, a)
	b := w.start("b", adminKubeconfig, args...)
	w.waitLeader(settle, a, b)
	interrupted, err := a.stop(t, syscall.SIGINT)
	if err != nil {
		t.Errorf("exit after SIGINT: %v, want status 0", err)
	}
	// Sooner than b could have waited out a's lease: the lock was released.
	w.waitLeader(settle, b)
	w.tookOver(interrupted, std.ttl-std.retry, b)
	waitEvent(t, ns, "a stopped leading: shutting down")
	var released bool
	for line := range strings.Lines(a.Logs()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		if _, ok := rec["time"]; !ok {
			t.Errorf("log line has no time: %q", line)
		}
		released = released || rec["msg"] == "released the lock"
	}
	if !released {
		t.Errorf("no JSON log line says the lock was released:\n%s", a.Logs())
	}
}
