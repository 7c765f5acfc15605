package elector

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestHTTPAPI checks every endpoint of the elector's HTTP API on a leader
// and a follower, including the /watch stream across a handover.
func TestHTTPAPI(t *testing.T) {
	ns := env.Namespace(t)
	args := []string{electionArg, ttlArg, "-namespace=" + ns}
	a := start(t, "a", adminKubeconfig, args...)
	waitLeader(t, 2*ttl, a)
	b := start(t, "b", adminKubeconfig, args...)
	watch(t, a, b)
	waitLeader(t, 2*ttl, a, b)

	get := func(p *participant, method, path string) (int, string) {
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
		code, body := get(tt.p, tt.method, tt.path)
		if code != tt.code || !strings.Contains(body, tt.contains) {
			t.Errorf("%s %s on %s = %d %q, want %d containing %q", tt.method, tt.path, tt.p.id, code, body, tt.code, tt.contains)
		}
	}
	var st election.Status
	_, body := get(a, "GET", "/")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if ts, err := time.Parse(time.RFC3339, st.Timestamp); err != nil || ts.Location() != time.UTC {
		t.Errorf("timestamp %q is not RFC3339 UTC: %v", st.Timestamp, err)
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
		case <-time.After(ttl):
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
}
