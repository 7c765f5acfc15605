package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
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
	*controlplane.Process
	election int // index into the elections
	id       string

	mu   sync.Mutex
	addr string // its GET / address, once it logged it
}

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
	var logFile *os.File
	var log io.Writer // nil: no log kept
	if logDir != "" {
		cmd.Args = append(cmd.Args, "-v=1")
		var err error
		if logFile, err = os.Create(filepath.Join(logDir, id+".log")); err != nil {
			return nil, err
		}
		log = logFile
	}
	p := &elector{election: index, id: id}
	proc, err := controlplane.Run(cmd, log, func(line string) {
		if addr, ok := controlplane.ServingAddress(line); ok {
			p.mu.Lock()
			if p.addr == "" {
				p.addr = addr
			}
			p.mu.Unlock()
		}
	})
	if err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, fmt.Errorf("elector %s: %w", id, err)
	}
	p.Process = proc
	if logFile != nil {
		go func() {
			<-proc.Done()
			logFile.Close()
		}()
	}
	return p, nil
}

func (p *elector) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// exited reports whether the process has ended, with the end of its log.
func (p *elector) exited() (bool, string) {
	if !p.Exited() {
		return false, ""
	}
	return true, fmt.Sprintf("elector %s exited (%v):\n%s", p.id, p.Cmd.ProcessState, p.Tail(20))
}

// statusClient asks every participant GET / over a kept-alive connection of
// its own.
var statusClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 1},
}

// status asks a participant GET /; ok is false when it does not serve yet
// or does not answer.
func (p *elector) status(ctx context.Context) (election.Status, bool) {
	addr := p.address()
	if addr == "" {
		return election.Status{}, false
	}
	st, err := controlplane.ElectorStatus(ctx, statusClient, addr)
	return st, err == nil
}
