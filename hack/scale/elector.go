package main

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

// electionSetup is one election, ready for its participants.
type electionSetup struct {
	name       string
	lock       election.LockType
	kubeconfig string // its service account's
}

// elector is one participant: a real elector process.
type elector struct {
	election int // index into the elections
	id       string
	cmd      *exec.Cmd
	done     chan struct{}

	mu   sync.Mutex
	addr string   // its GET / address, once it logged it
	tail []string // the last lines of its log
}

var listening = regexp.MustCompile(`msg="serving leader state".*address=(\S+)`)

// startElector starts a participant with the elector's default timings,
// serving GET / on a port of its own. It does not wait for the process to
// serve: address reports when it does.
// With logDir set, its log is kept there as ID.log.
func startElector(bin, logDir, namespace string, index int, e electionSetup, id string) (*elector, error) {
	cmd := exec.Command(bin,
		"-election="+e.name, "-namespace="+namespace, "-lock-type="+string(e.lock),
		"-id="+id, "-kubeconfig="+e.kubeconfig, "-http=127.0.0.1:0")
	// Nothing of this process's environment (ELECTOR_*, KUBECONFIG) leaks
	// into the elector's settings.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	// Electors do not outlive the program, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var logFile io.WriteCloser = nopCloser{io.Discard}
	if logDir != "" {
		cmd.Args = append(cmd.Args, "-v=1")
		if logFile, err = os.Create(filepath.Join(logDir, id+".log")); err != nil {
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start elector %s: %w", id, err)
	}
	p := &elector{election: index, id: id, cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			p.mu.Lock()
			if m := listening.FindStringSubmatch(line); m != nil && p.addr == "" {
				p.addr = m[1]
			}
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (p *elector) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// exited reports whether the process has ended, with the end of its log.
func (p *elector) exited() (bool, string) {
	select {
	case <-p.done:
	default:
		return false, ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return true, fmt.Sprintf("elector %s exited (%v):\n    %s", p.id, p.cmd.ProcessState, strings.Join(p.tail, "\n    "))
}

// stop kills the process and waits for it.
func (p *elector) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// statusClient asks every participant GET / over a kept-alive connection of
// its own.
var statusClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 1},
}

// status asks a participant GET /; ok is false when it does not serve yet
// or does not answer.
func (p *elector) status(ctx context.Context) (st election.Status, ok bool) {
	addr := p.address()
	if addr == "" {
		return st, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return st, false
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return st, false
	}
	return st, true
}
