package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// TestDemo runs `make demo` to the handover and checks that it went through
// the webhook and the RBAC, handed over, and left no process behind: none
// of the electors and the injector, and none of the control plane
// (etcd, kube-apiserver, kube-controller-manager) it started.
func TestDemo(t *testing.T) {
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, name := range []string{"elector", "injector"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "github.com/vapor-ware/k8s-elector/cmd/"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	// The binaries the demo runs, by their resolved path, as /proc shows
	// them.
	known := map[string]string{}
	for dir, names := range map[string][]string{
		assets: {"etcd", "kube-apiserver", "kube-controller-manager"},
		bin:    {"elector", "injector"},
	} {
		for _, name := range names {
			path, err := filepath.EvalSymlinks(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			known[path] = name
		}
	}
	// Which of them were seen running: proof that the scan below would find
	// them if they were left behind.
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	scanDone := make(chan struct{})
	stopScan := make(chan struct{})
	go func() {
		defer close(scanDone)
		for {
			for _, c := range children() {
				if name, ok := known[c.exe]; ok {
					mu.Lock()
					seen[name] = true
					mu.Unlock()
				}
			}
			select {
			case <-stopScan:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err = Run(ctx, Options{Root: "../..", Bin: bin, ExitAfterRollout: true}, &out)
	close(stopScan)
	<-scanDone
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`the injector added "elector" (native sidecar)`,
		"as service account demo/default",
		"IS_LEADER",
		"kubeconfig of the local control plane",
		"handover: ",
		"rollout done in ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output has no %q", want)
		}
	}
	// The sample Deployment rolls with the default 25% / 25%: the newest
	// pod is named successor, so leadership moves once, to a new pod.
	if m := rolloutDone.FindStringSubmatch(out.String()); m == nil {
		t.Errorf("the demo's output says no rollout was done")
	} else if m[1] != "1" {
		t.Errorf("the rollout changed leader %s times, want once", m[1])
	}
	for _, name := range known {
		if !seen[name] {
			t.Errorf("no %s process of the demo was seen while it ran (seen: %v)", name, seen)
		}
	}
	for _, c := range children() {
		if name, ok := known[c.exe]; ok {
			t.Errorf("%s left behind: pid %d (%s)", name, c.pid, c.exe)
		}
	}
	if pids := controlplane.Processes(os.TempDir() + "/k8s-elector-demo-"); len(pids) > 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

var rolloutDone = regexp.MustCompile(`rollout done in \S+: (\d+) leader change`)

type child struct {
	pid int
	exe string
}

// children lists the live child processes of this test process: those the
// demo started, whatever their command line.
func children() []child {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []child
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so read after
		// the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", entry.Name(), "exe"))
		if err != nil {
			continue
		}
		out = append(out, child{pid: pid, exe: exe})
	}
	return out
}
