package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// tailLines is how many of a process's last lines Tail can give.
const tailLines = 50

// Process is a program run on this machine as a node would run it: an
// elector, the injector, a control-plane binary. Its stdout and stderr are
// read line by line.
type Process struct {
	Cmd *exec.Cmd

	done chan struct{}
	err  error // Wait's, once done is closed

	mu   sync.Mutex
	tail []string
}

// drainAfterExit is how long Run keeps reading a process's output after
// the process exited: a child it left behind may hold the pipe open.
const drainAfterExit = 2 * time.Second

// Run starts cmd with its stdout and stderr joined. Each line goes to log
// and to line, where they are not nil, as it is written; the last lines are
// kept for Tail.
func Run(cmd *exec.Cmd, log io.Writer, line func(string)) (*Process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	w.Close()
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	if log == nil {
		log = io.Discard
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		br := bufio.NewReader(r)
		for {
			// A line of any length is read whole: the log gets every byte.
			text, err := br.ReadString('\n')
			if text != "" {
				text = strings.TrimSuffix(text, "\n")
				fmt.Fprintln(log, text)
				p.mu.Lock()
				p.tail = append(p.tail, text)
				if len(p.tail) > tailLines {
					p.tail = p.tail[1:]
				}
				p.mu.Unlock()
				if line != nil {
					line(text)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		// The write end is a file, not a pipe of exec's own, so Wait does
		// not wait for the reader, nor for a child that still holds it.
		p.err = cmd.Wait()
		select {
		case <-read:
		case <-time.After(drainAfterExit):
		}
		r.Close() // ends a read still waiting on such a child
		<-read
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited and its output is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process exited (exec.Cmd.Wait's error); nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Tail is the last n lines of the process's output (at most 50), each
// indented by four spaces, for an error message.
func (p *Process) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.tail[max(0, len(p.tail)-n):] {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Stop sends sig and waits for the process to exit; after grace it kills
// it and says so. A stopped (SIGSTOP) process is resumed first.
func (p *Process) Stop(sig os.Signal, grace time.Duration) error {
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of %s", filepath.Base(p.Cmd.Path), grace, signalName(sig))
	}
}

// signalName names sig as kill(1) does.
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	return sig.String()
}

// Freeze stops the process (SIGSTOP) and returns once every thread of it
// is seen stopped; after timeout it gives up with an error.
func (p *Process) Freeze(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if allStopped(p.Cmd.Process.Pid) {
			return nil
		}
	}
	return fmt.Errorf("%s (pid %d) not stopped %s after SIGSTOP", p.Cmd.Path, p.Cmd.Process.Pid, timeout)
}

// allStopped reports whether every thread of process pid is stopped.
func allStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			return false
		}
		// T: stopped by a signal; t: stopped by a tracer.
		if s, ok := procState(string(raw)); !ok || (s != 'T' && s != 't') {
			return false
		}
	}
	return true
}

// Kill kills the process and waits for it.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// serving is the elector's log line that says where it serves GET /, as
// text or as JSON.
var serving = regexp.MustCompile(`"?msg"?[=:]"serving leader state".*"?address"?[=:]"?([^\s"]+)`)

// ServingAddress is the address an elector's log line says it serves
// GET / on, if the line says so.
func ServingAddress(line string) (string, bool) {
	m := serving.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// StartElector starts cmd, an elector, as Run does, and waits until its
// log says where it serves GET /, for at most wait. One that does not serve
// in time, or before ctx ends, is killed; the error for one that exited
// first or did not serve in time carries the end of its log. ctx matters
// only until the elector serves.
func StartElector(ctx context.Context, cmd *exec.Cmd, log io.Writer, line func(string), wait time.Duration) (*Process, string, error) {
	addr := make(chan string, 1)
	p, err := Run(cmd, log, func(l string) {
		if line != nil {
			line(l)
		}
		if a, ok := ServingAddress(l); ok {
			select {
			case addr <- a:
			default:
			}
		}
	})
	if err != nil {
		return nil, "", err
	}
	select {
	case a := <-addr:
		return p, a, nil
	case <-p.done:
		return nil, "", fmt.Errorf("the elector exited before it served (%v); its log ends:\n%s", p.err, p.Tail(20))
	case <-time.After(wait):
		p.Kill()
		return nil, "", fmt.Errorf("the elector did not serve within %s; its log ends:\n%s", wait, p.Tail(20))
	case <-ctx.Done():
		p.Kill()
		return nil, "", ctx.Err()
	}
}

// defaultStatusClient asks GET / for ElectorStatus when the caller has no
// client of its own.
var defaultStatusClient = &http.Client{Timeout: 2 * time.Second}

// ElectorStatus asks the elector serving on addr for GET /, with c (a
// client with a two-second timeout when nil).
func ElectorStatus(ctx context.Context, c *http.Client, addr string) (election.Status, error) {
	if c == nil {
		c = defaultStatusClient
	}
	var st election.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+election.PathStatus, nil)
	if err != nil {
		return st, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s on %s: %s", election.PathStatus, addr, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("GET %s on %s: %w", election.PathStatus, addr, err)
	}
	return st, nil
}

// StatusStream is an elector's GET /watch: a status at once, then one at
// every change.
type StatusStream struct {
	resp  *http.Response
	lines *bufio.Scanner
	url   string
}

// WatchElector opens GET /watch on the elector serving on addr, with c
// (http.DefaultClient when nil: the stream stays open, so the client
// should have no timeout). ctx ends the stream.
func WatchElector(ctx context.Context, c *http.Client, addr string) (*StatusStream, error) {
	if c == nil {
		c = http.DefaultClient
	}
	url := "http://" + addr + election.PathWatch
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return &StatusStream{resp: resp, lines: bufio.NewScanner(resp.Body), url: url}, nil
}

// Next waits for the stream's next status.
func (s *StatusStream) Next() (election.Status, error) {
	var st election.Status
	for s.lines.Scan() {
		data, ok := strings.CutPrefix(s.lines.Text(), "data: ")
		if !ok {
			continue // a heartbeat comment, or the blank line that ends an event
		}
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			return st, fmt.Errorf("GET %s: %w", s.url, err)
		}
		return st, nil
	}
	if err := s.lines.Err(); err != nil {
		return st, fmt.Errorf("GET %s: %w", s.url, err)
	}
	return st, fmt.Errorf("GET %s: %w", s.url, io.EOF)
}

// Close ends the stream.
func (s *StatusStream) Close() error { return s.resp.Body.Close() }
