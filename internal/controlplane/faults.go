package controlplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The faults of the control plane itself: kube-apiserver frozen, or killed
// and started again; etcd killed and started again. A restart is a real
// one, not a new cluster: the same command line, so the same ports,
// certificates, service-account keys and etcd data, and the Env's Config
// and Client work again once it is back. envtest's own Stop and Start
// cannot do that (Stop removes the folders it made, Start makes a new
// client CA), so the Env takes the process over from envtest the first
// time it is asked for one of these.

// Restart is when each step of a restart happened.
type Restart struct {
	// Killed is when SIGKILL was sent to the old process.
	Killed time.Time
	// Up is when the new process first answered: kube-apiserver's /livez,
	// or a TCP connection to etcd's client port.
	Up time.Time
	// Ready is when kube-apiserver first served a read from etcd as an
	// authenticated and authorized client. (/readyz of a restarted
	// kube-apiserver can fail for minutes on a busy machine while it
	// serves every request.)
	Ready time.Time
}

// process is a control-plane process the Env has taken over from envtest:
// it knows the command line, and runs the process again with it.
type process struct {
	name   string   // the binary's name, for messages and log files
	args   []string // argv[0] first
	out    io.Writer
	logDir string

	mu     sync.Mutex
	pid    int
	own    *Process // nil until the Env started the process itself
	frozen bool
	starts int
}

// findProcess takes over the running process of binary whose command
// line holds marker.
func findProcess(binary, marker string) (*process, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(raw), marker) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == binary {
			return &process{name: binary, args: args, pid: pid}, nil
		}
	}
	return nil, fmt.Errorf("no %s process with %s in its command line", binary, marker)
}

// flag is the value of --name=value on the process's command line.
func (p *process) flag(name string) string {
	for _, a := range p.args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := syscall.Kill(p.pid, sig); err != nil {
		return fmt.Errorf("%s %s (pid %d): %w", sig, p.name, p.pid, err)
	}
	p.frozen = sig == syscall.SIGSTOP
	return nil
}

// kill sends SIGKILL and waits until the process is gone, with its last
// thread: only then are its ports free.
func (p *process) kill() (time.Time, error) {
	p.mu.Lock()
	killed := time.Now()
	err := syscall.Kill(p.pid, syscall.SIGKILL)
	pid, own := p.pid, p.own
	p.mu.Unlock()
	if err != nil {
		return killed, fmt.Errorf("SIGKILL %s (pid %d): %w", p.name, pid, err)
	}
	if own != nil {
		<-own.Done()
	}
	// envtest reaps the process it started; a zombie holds no port, but
	// wait for it to go so that no second process of the name is seen.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || isZombie(string(stat)) {
			break
		}
	}
	return killed, nil
}

// start runs the process again with its command line, its output in a log
// file of its own when there is a log folder. It returns a channel closed
// when the process exits, and where its output went.
func (p *process) start() (<-chan struct{}, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	out, where := p.out, "the output of the control plane"
	var logFile *os.File
	if p.logDir != "" {
		var err error
		logFile, err = os.Create(filepath.Join(p.logDir, fmt.Sprintf("%s.%d.log", p.name, p.starts)))
		if err != nil {
			return nil, "", err
		}
		out, where = logFile, logFile.Name()
	} else if out == nil {
		where = "no log: set Options.LogDir to keep it"
	}
	cmd := exec.Command(p.args[0], p.args[1:]...)
	// The process must not outlive the program that restarted it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	own, err := Run(cmd, out, nil)
	if err != nil {
		if logFile != nil {
			logFile.Close()
		}
		return nil, "", fmt.Errorf("start %s again: %w", p.name, err)
	}
	if logFile != nil {
		go func() {
			<-own.Done()
			logFile.Close()
		}()
	}
	p.pid, p.own, p.frozen = cmd.Process.Pid, own, false
	return own.Done(), where, nil
}

// restart kills the process and starts it again; up reports whether the
// new one answers, ready whether it serves. A start that fails (a port
// still taken, say) is tried again, twice.
func (p *process) restart(ctx context.Context, up, ready func(context.Context) bool) (Restart, error) {
	var r Restart
	var err error
	if r.Killed, err = p.kill(); err != nil {
		return r, err
	}
	done, log, err := p.start()
	if err != nil {
		return r, err
	}
	attempts := 1
	for {
		if r.Up.IsZero() && up(ctx) {
			r.Up = time.Now()
		}
		if !r.Up.IsZero() && ready(ctx) {
			r.Ready = time.Now()
			return r, nil
		}
		select {
		case <-done:
			if attempts == 3 {
				return r, fmt.Errorf("%s exited while starting again, three times: see %s", p.name, log)
			}
			attempts++
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			if done, log, err = p.start(); err != nil {
				return r, err
			}
		case <-ctx.Done():
			if r.Up.IsZero() {
				return r, fmt.Errorf("%s did not answer again (%s): %w", p.name, log, ctx.Err())
			}
			return r, fmt.Errorf("%s answers again but kube-apiserver serves no read (%s): %w", p.name, log, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends a process the Env started itself; envtest stops the others.
func (p *process) stop() {
	p.mu.Lock()
	_ = syscall.Kill(p.pid, syscall.SIGCONT)
	own := p.own
	p.mu.Unlock()
	if own != nil {
		_ = own.Stop(syscall.SIGTERM, 10*time.Second)
	}
}

// takeOver finds kube-apiserver and etcd, once.
func (e *Env) takeOver() error {
	e.faultsMu.Lock()
	defer e.faultsMu.Unlock()
	if e.apiServer != nil {
		return nil
	}
	api, err := findProcess("kube-apiserver", "--cert-dir="+e.Env.ControlPlane.APIServer.CertDir)
	if err != nil {
		return err
	}
	etcd, err := findProcess("etcd", "--data-dir="+e.Env.ControlPlane.Etcd.DataDir)
	if err != nil {
		return err
	}
	for _, p := range []*process{api, etcd} {
		p.logDir = e.logDir
		if e.output {
			p.out = os.Stderr
		}
	}
	e.apiServer, e.etcd = api, etcd
	return nil
}

// Freeze stops kube-apiserver (SIGSTOP): its connections stay open and
// nothing is answered, as when it hangs. Thaw resumes it.
func (e *Env) Freeze() error {
	if err := e.takeOver(); err != nil {
		return err
	}
	return e.apiServer.signal(syscall.SIGSTOP)
}

// Thaw resumes a frozen kube-apiserver (SIGCONT).
func (e *Env) Thaw() error {
	if err := e.takeOver(); err != nil {
		return err
	}
	return e.apiServer.signal(syscall.SIGCONT)
}

// RestartAPIServer kills kube-apiserver (SIGKILL) and starts it again on the
// same port, with the same certificates, keys and etcd. It returns once the
// new one serves a read, or with an error when ctx ends first.
func (e *Env) RestartAPIServer(ctx context.Context) (Restart, error) {
	if err := e.takeOver(); err != nil {
		return Restart{}, err
	}
	httpClient, err := rest.HTTPClientFor(e.Config)
	if err != nil {
		return Restart{}, err
	}
	httpClient.Timeout = time.Second
	up := func(ctx context.Context) bool {
		resp, err := httpClient.Get(e.Config.Host + "/livez")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}
	return e.apiServer.restart(ctx, up, e.servesRead)
}

// RestartEtcd kills etcd (SIGKILL) and starts it again with the same data
// and ports; kube-apiserver keeps running and reconnects. It returns once
// kube-apiserver serves a read from the new etcd.
func (e *Env) RestartEtcd(ctx context.Context) (Restart, error) {
	if err := e.takeOver(); err != nil {
		return Restart{}, err
	}
	client, err := url.Parse(strings.Split(e.etcd.flag("listen-client-urls"), ",")[0])
	if err != nil || client.Host == "" {
		return Restart{}, fmt.Errorf("etcd's --listen-client-urls=%q names no address", e.etcd.flag("listen-client-urls"))
	}
	up := func(context.Context) bool {
		conn, err := net.DialTimeout("tcp", client.Host, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}
	return e.etcd.restart(ctx, up, e.servesRead)
}

// servesRead reports whether kube-apiserver serves a read from etcd
// (a GET without resourceVersion is a quorum read) within a second.
func (e *Env) servesRead(ctx context.Context) bool {
	cfg := rest.CopyConfig(e.Config)
	cfg.Timeout = time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false
	}
	_, err = client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
	return err == nil
}

// stopTakenOver resumes and stops the processes the Env started itself,
// kube-apiserver before etcd.
func (e *Env) stopTakenOver() {
	e.faultsMu.Lock()
	defer e.faultsMu.Unlock()
	if e.apiServer == nil {
		return
	}
	e.apiServer.stop()
	e.etcd.stop()
}
