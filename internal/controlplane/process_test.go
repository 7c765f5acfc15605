package controlplane

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestServingAddress(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`time=2026-12-06T16:00:00.000Z level=INFO msg="serving leader state" address=127.0.0.1:4040`, "127.0.0.1:4040"},
		{`{"time":"2026-12-06T16:00:00Z","level":"INFO","msg":"serving leader state","address":"[::1]:4040"}`, "[::1]:4040"},
		{`time=2026-12-06T16:00:00.000Z level=INFO msg="serving leader state" address=[fd00::a]:4040`, "[fd00::a]:4040"},
		{`time=2026-12-06T16:00:00.000Z level=INFO msg="joining election" election=e`, ""},
		{`msg="serving leader state"`, ""},
	} {
		got, ok := ServingAddress(tc.line)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("ServingAddress(%q) = %q, %v; want %q", tc.line, got, ok, tc.want)
		}
	}
}

func TestStartElector(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var seen []string
	var log strings.Builder
	p, addr, err := StartElector(ctx, exec.Command("sh", "-c",
		`echo 'level=INFO msg="joining election"'; echo 'msg="serving leader state" address=127.0.0.1:9' >&2; exec sleep 60`),
		&log, func(l string) { mu.Lock(); seen = append(seen, l); mu.Unlock() }, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1:9" {
		t.Errorf("address %q, want 127.0.0.1:9", addr)
	}
	if p.Exited() || p.Err() != nil {
		t.Errorf("running process: Exited %v, Err %v", p.Exited(), p.Err())
	}
	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !p.Exited() || p.Err() == nil {
		t.Errorf("after Stop: Exited %v, Err %v; want an exit by signal", p.Exited(), p.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || log.String() != strings.Join(seen, "\n")+"\n" {
		t.Errorf("lines seen %q, logged %q; want both lines, stdout and stderr, in both", seen, log.String())
	}
	if tail := p.Tail(1); tail != "    "+seen[1]+"\n" {
		t.Errorf("Tail(1) = %q", tail)
	}
}

func TestStartElectorFails(t *testing.T) {
	ctx := context.Background()
	_, _, err := StartElector(ctx, exec.Command("sh", "-c", "echo '-ttl: 1s is under the minimum 2s'; exit 2"), nil, nil, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before it served") || !strings.Contains(err.Error(), "-ttl: 1s") {
		t.Errorf("an elector that exits: %v; want the exit and its log", err)
	}
	_, _, err = StartElector(ctx, exec.Command("sleep", "60"), nil, nil, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not serve within 100ms") {
		t.Errorf("an elector that never serves: %v", err)
	}
	p, err := Run(exec.Command("sh", "-c", `trap "" TERM; echo ready; exec sleep 60`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(p.Tail(1), "ready") {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Stop(syscall.SIGTERM, 100*time.Millisecond); err == nil || !p.Exited() {
		t.Errorf("a process that ignores SIGTERM: Stop = %v, exited %v; want it killed and said", err, p.Exited())
	}
}

func TestFreeze(t *testing.T) {
	p, err := Run(exec.Command("sleep", "60"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if allStopped(p.Cmd.Process.Pid) {
		t.Fatal("a running process is seen stopped")
	}
	if err := p.Freeze(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !allStopped(p.Cmd.Process.Pid) {
		t.Error("Freeze returned before the process stopped")
	}
	// Stop resumes a frozen process, so that it can act on the signal.
	if err := p.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Errorf("Stop of a frozen process: %v", err)
	}
	if err := p.Freeze(time.Second); err == nil {
		t.Error("Freeze of an exited process: no error")
	}
}

// TestRunOutput: every byte of a line longer than any buffer reaches the
// log, the lines after it reach the callback, and a child left holding the
// output does not keep Done from closing.
func TestRunOutput(t *testing.T) {
	var log strings.Builder
	var mu sync.Mutex
	var seen []string
	p, err := Run(exec.Command("sh", "-c", `head -c 2000000 /dev/zero | tr '\0' x; echo; echo after; (sleep 30 &) ; echo last`),
		&log, func(l string) { mu.Lock(); seen = append(seen, l); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("Done waited on a child that holds the output")
	}
	want := strings.Repeat("x", 2000000) + "\nafter\nlast\n"
	if log.String() != want {
		t.Errorf("log has %d bytes, want %d", log.Len(), len(want))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || seen[1] != "after" || seen[2] != "last" {
		t.Errorf("%d lines seen, want 3 ending after, last", len(seen))
	}
	if p.Err() != nil {
		t.Errorf("exit: %v", p.Err())
	}
}
