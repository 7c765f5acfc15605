package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// controlPlane is etcd and kube-apiserver, started by envtest. The harness
// takes over the kube-apiserver process after the start, so that it can
// freeze it, kill it and start it again with the very same command line:
// the same port, certificates, service-account keys and etcd. envtest's own
// APIServer.Stop and Start cannot do that: Stop removes the certificate
// directory it made, and Start makes a new client CA.
type controlPlane struct {
	env    *envtest.Environment
	cfg    *rest.Config
	admin  kubernetes.Interface
	host   string // the API server's host:port
	logDir string

	mu      sync.Mutex
	args    []string  // the API server's command line, argv[0] first
	pid     int       // the running API server
	own     *exec.Cmd // the API server the harness started, if it did
	ownDone chan struct{}
	frozen  bool
	starts  int
}

// startControlPlane starts etcd and kube-apiserver from assets (etcd and
// kube-apiserver; kube-controller-manager is not needed).
func startControlPlane(assets, logDir string) (*controlPlane, error) {
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("no %s in %s: run `make envtest` to build the control plane, or set -assets", bin, assets)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// A busy 2-core machine can take a minute to start kube-apiserver.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  10 * time.Second,
	}
	// A restart must be quick, and the faults are the point: no grace.
	env.ControlPlane.GetAPIServer().Configure().Set("shutdown-delay-duration", "0s")
	cfg, err := env.Start()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start control plane: %w", err), env.Stop())
	}
	cp := &controlPlane{env: env, logDir: logDir}
	u, err := url.Parse(cfg.Host)
	if err == nil {
		cp.host = u.Host
		cp.cfg = rest.CopyConfig(cfg)
		// Faults freeze the API server: no admin call may hang for long.
		cp.cfg.Timeout = 5 * time.Second
		cp.admin, err = kubernetes.NewForConfig(cp.cfg)
	}
	if err == nil {
		cp.pid, cp.args, err = findAPIServer(env.ControlPlane.APIServer.CertDir)
	}
	if err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	return cp, nil
}

// findAPIServer finds the kube-apiserver process whose command line names
// certDir, and returns its PID and command line.
func findAPIServer(certDir string) (int, []string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kube-apiserver" && bytes.Contains(raw, []byte("--cert-dir="+certDir)) {
			return pid, args, nil
		}
	}
	return 0, nil, fmt.Errorf("no kube-apiserver process with --cert-dir=%s", certDir)
}

// Freeze stops the API server (SIGSTOP): connections stay open, nothing is
// answered.
func (cp *controlPlane) Freeze() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if err := syscall.Kill(cp.pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP kube-apiserver: %w", err)
	}
	cp.frozen = true
	return nil
}

// Thaw resumes a frozen API server.
func (cp *controlPlane) Thaw() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.frozen = false
	return syscall.Kill(cp.pid, syscall.SIGCONT)
}

// Restart kills the API server (SIGKILL) and starts it again with the same
// command line. It returns when the kill was sent, when the new one first
// answered an HTTP request (up: it may serve the electors from then on) and
// when it first served a read (ready).
func (cp *controlPlane) Restart(ctx context.Context) (killed, up, ready time.Time, err error) {
	httpClient, err := rest.HTTPClientFor(cp.cfg)
	if err != nil {
		return killed, up, ready, err
	}
	cp.mu.Lock()
	killed = time.Now()
	if err := syscall.Kill(cp.pid, syscall.SIGKILL); err != nil {
		cp.mu.Unlock()
		return killed, up, ready, fmt.Errorf("SIGKILL kube-apiserver: %w", err)
	}
	own, ownDone := cp.own, cp.ownDone
	cp.mu.Unlock()
	if own != nil {
		<-ownDone
	}
	// The port is free once the last thread of the old process is gone,
	// which can be after /proc shows it a zombie.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ln, err := net.Listen("tcp", cp.host); err == nil {
			ln.Close()
			break
		}
	}

	done, logName, err := cp.start()
	if err != nil {
		return killed, up, ready, err
	}
	attempts := 1
	for {
		if up.IsZero() {
			if resp, err := httpClient.Get(cp.cfg.Host + "/livez"); err == nil {
				resp.Body.Close()
				up = time.Now()
			}
		}
		// Ready is serving what the electors need: a read from etcd, as an
		// authenticated and authorized client. (/readyz of a restarted
		// kube-apiserver can stay failing for minutes on a busy machine
		// while it serves every request.)
		if !up.IsZero() {
			if _, err := cp.admin.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err == nil {
				return killed, up, time.Now(), nil
			}
		}
		select {
		case <-done:
			// A start that fails (the port still taken, say) is tried
			// again, twice.
			if attempts == 3 {
				return killed, up, ready, fmt.Errorf("kube-apiserver exited while starting again: see %s", logName)
			}
			attempts++
			sleep(ctx, 500*time.Millisecond)
			if done, logName, err = cp.start(); err != nil {
				return killed, up, ready, err
			}
		case <-ctx.Done():
			if up.IsZero() {
				return killed, up, ready, fmt.Errorf("kube-apiserver did not answer again (log %s): %w", logName, ctx.Err())
			}
			return killed, up, ready, fmt.Errorf("kube-apiserver answers again but serves no read (log %s): %w", logName, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// start runs kube-apiserver with the saved command line, its output in a
// log file of its own.
func (cp *controlPlane) start() (chan struct{}, string, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.starts++
	logFile, err := os.Create(filepath.Join(cp.logDir, fmt.Sprintf("kube-apiserver.%d.log", cp.starts)))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(cp.args[0], cp.args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, "", fmt.Errorf("start kube-apiserver again: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	cp.pid, cp.own, cp.ownDone, cp.frozen = cmd.Process.Pid, cmd, done, false
	return done, logFile.Name(), nil
}

// Stop resumes and stops the API server the harness started, then what
// envtest started.
func (cp *controlPlane) Stop() error {
	cp.mu.Lock()
	_ = syscall.Kill(cp.pid, syscall.SIGCONT)
	own, done := cp.own, cp.ownDone
	cp.mu.Unlock()
	if own != nil {
		_ = own.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = own.Process.Kill()
			<-done
		}
	}
	return cp.env.Stop()
}

var requestTotal = regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)$`)
var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// requestCounter adds up apiserver_request_total on the lock types across
// API server restarts, which reset the counters.
type requestCounter struct {
	mu       sync.Mutex
	baseline bool
	last     map[string]float64 // by series
	total    map[string]float64 // by "resource verb"
}

// scrape reads /metrics and adds what each series grew by since the last
// scrape. The first scrape is the baseline.
func (rc *requestCounter) scrape(ctx context.Context, admin kubernetes.Interface) error {
	raw, err := admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.last == nil {
		rc.last, rc.total = map[string]float64{}, map[string]float64{}
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if r := labels["resource"]; r != "leases" && r != "configmaps" {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		prev := rc.last[m[1]]
		rc.last[m[1]] = v
		if rc.baseline {
			// A series seen for the first time counts from zero; one that
			// went down was reset by a restart missed in between.
			if v < prev {
				prev = 0
			}
			rc.total[labels["resource"]+" "+labels["verb"]] += v - prev
		}
	}
	rc.baseline = true
	return sc.Err()
}

// restarted forgets the last values: a new API server counts from zero.
// Requests between the last scrape and the restart are lost.
func (rc *requestCounter) restarted() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	clear(rc.last)
}

// totals is a copy of the counts by "resource verb".
func (rc *requestCounter) totals() map[string]float64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.total)
}
