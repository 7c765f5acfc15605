package elector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// participant is one elector process.
type participant struct {
	id   string
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	exit error

	mu     sync.Mutex
	logs   bytes.Buffer
	paused bool
}

var listening = regexp.MustCompile(`msg="serving leader state" address=(\S+)`)

// start runs the elector binary with args (and -http on a free port) and
// waits until it serves.
func start(t *testing.T, id, kubeconfig string, args ...string) *participant {
	t.Helper()
	args = append([]string{"-id=" + id, "-kubeconfig=" + kubeconfig, "-http=127.0.0.1:0", "-v=1"}, args...)
	cmd := exec.Command(electorBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &participant{id: id, cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start elector %s: %v", id, err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.exit = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("logs of %s:\n%s", id, p.Logs())
		}
	})
	select {
	case p.addr = <-addr:
	case <-p.done:
		t.Fatalf("elector %s exited before serving: %v\n%s", id, p.exit, p.Logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("elector %s did not serve within 20s:\n%s", id, p.Logs())
	}
	return p
}

func (p *participant) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func (p *participant) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *participant) setPaused(v bool) {
	p.mu.Lock()
	p.paused = v
	p.mu.Unlock()
}

func (p *participant) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

var httpClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

// status asks the participant GET /.
func (p *participant) status() (election.Status, error) {
	var st election.Status
	resp, err := httpClient.Get("http://" + p.addr + "/")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET / = %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// signal sends sig and, for SIGTERM, waits for the exit.
func (p *participant) stop(t *testing.T, sig syscall.Signal) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.id, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit within 10s of %s", p.id, sig)
	}
	return time.Since(start), p.exit
}

// watcher polls every live participant's GET / every 10 ms, all at once,
// and records any moment at which two of them claim to lead. This is the
// safety property every election test asserts.
type watcher struct {
	mu         sync.Mutex
	ps         []*participant
	violations []string
	polls      int
	stop       chan struct{}
	done       chan struct{}
}

func watch(t *testing.T, ps ...*participant) *watcher {
	w := &watcher{ps: ps, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	t.Cleanup(func() {
		w.close()
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.violations) > 0 {
			t.Errorf("two participants claimed leadership at once (%d of %d polls), first: %s", len(w.violations), w.polls, w.violations[0])
		}
		if w.polls == 0 {
			t.Errorf("the safety watcher made no poll")
		}
	})
	return w
}

func (w *watcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *watcher) run() {
	defer close(w.done)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		w.mu.Lock()
		ps := append([]*participant(nil), w.ps...)
		w.mu.Unlock()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			leaders []string
		)
		for _, p := range ps {
			if !p.alive() || p.isPaused() {
				continue
			}
			wg.Go(func() {
				st, err := p.status()
				if err == nil && st.IsLeader {
					mu.Lock()
					leaders = append(leaders, p.id)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		w.mu.Lock()
		w.polls++
		if len(leaders) > 1 {
			w.violations = append(w.violations, fmt.Sprintf("%v at %s", leaders, time.Now().Format(time.StampMilli)))
		}
		w.mu.Unlock()
	}
}

// waitLeader waits until exactly one live participant leads and every live
// one names it, and returns it.
func waitLeader(t *testing.T, timeout time.Duration, ps ...*participant) *participant {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var leader *participant
		agree, n := true, 0
		names := map[string]bool{}
		for _, p := range ps {
			if !p.alive() || p.isPaused() {
				continue
			}
			st, err := p.status()
			if err != nil {
				agree = false
				names = map[string]bool{"error: " + err.Error(): true}
				break
			}
			names[st.Leader] = true
			if st.IsLeader {
				leader = p
				n++
			}
		}
		if agree && n == 1 && len(names) == 1 && names[leader.id] {
			return leader
		}
		last = fmt.Sprintf("%d leaders, leader names %v", n, names)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no single agreed leader within %s: %s", timeout, last)
	return nil
}

// noLeader checks that no live participant claims to lead.
func noLeader(ps ...*participant) error {
	for _, p := range ps {
		if !p.alive() {
			continue
		}
		st, err := p.status()
		if err != nil {
			return err
		}
		if st.IsLeader {
			return fmt.Errorf("%s claims to lead", p.id)
		}
	}
	return nil
}

// proxy forwards TCP to the API server and can cut every connection, which
// is an API-server outage as the electors see it.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
}

// cut closes the listener and every connection: the API server is gone.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same address.
func (p *proxy) restore(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func tempFile(t *testing.T, name string, data []byte) string {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
