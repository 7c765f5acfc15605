// Package controlplane is the local cluster that the integration tests, the
// demo, the benchmarks and the chaos harness run against. It starts the
// control plane (etcd, kube-apiserver and, when asked,
// kube-controller-manager) and injects its faults: kube-apiserver frozen or
// restarted, etcd restarted. It applies manifests, mints service-account
// tokens, mounts Secrets, runs the injector as config/default would, and
// runs electors as local processes and asks them who leads (process.go).
// The binaries are built from source by `make envtest` and found through
// KUBEBUILDER_ASSETS.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the folder with the control-plane binaries.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// Options choose what to start beside etcd and kube-apiserver.
type Options struct {
	// ControllerManager starts kube-controller-manager with the controllers
	// that turn Deployments into Pods and give namespaces their default
	// service account.
	ControllerManager bool
	// Webhook installs webhook configurations and serves their TLS locally.
	Webhook envtest.WebhookInstallOptions
	// Output shows the control plane's logs.
	Output bool
	// LogDir, when set, keeps the output of every process the Env starts
	// again after a fault (RestartAPIServer, RestartEtcd), a file each.
	LogDir string
}

// Env is a running control plane.
type Env struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client kubernetes.Interface

	kcm *Process
	dir string

	output bool
	logDir string

	faultsMu        sync.Mutex
	apiServer, etcd *process // taken over from envtest by the first fault
}

// Assets returns the folder with the control-plane binaries, or an error
// that says how to build them.
func Assets() (string, error) {
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		return "", fmt.Errorf("%s is not set: run `make envtest` (it builds the control plane into bin/k8s) and run the tests with `make test`", AssetsEnv)
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s=%s has no %s: run `make envtest` to build the control plane", AssetsEnv, dir, bin)
		}
	}
	return dir, nil
}

// Start starts a control plane. Stop it with Stop.
func Start(opts Options) (*Env, error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	e := &Env{Env: &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		WebhookInstallOptions:    opts.Webhook,
		AttachControlPlaneOutput: opts.Output,
		ControlPlaneStopTimeout:  10 * time.Second,
	}, output: opts.Output, logDir: opts.LogDir}
	// A fast shutdown (no shutdown delay) keeps the tests quick; nothing
	// here depends on the default it changes.
	api := e.Env.ControlPlane.GetAPIServer()
	api.Configure().Set("shutdown-delay-duration", "0s")
	e.Config, err = e.Env.Start()
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	e.Client, err = kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	if opts.ControllerManager {
		if err := e.startControllerManager(assets, opts.Output); err != nil {
			return nil, errors.Join(err, e.Stop())
		}
	}
	return e, nil
}

// startControllerManager runs kube-controller-manager against the API
// server, with only the controllers the tests need.
func (e *Env) startControllerManager(assets string, output bool) error {
	user, err := e.Env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("controller-manager credentials: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	e.dir, err = os.MkdirTemp("", "k8s-elector-kcm-")
	if err != nil {
		return err
	}
	path := filepath.Join(e.dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+path,
		"--controllers=deployment,replicaset,statefulset,serviceaccount",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-deployment-syncs=2",
		"--concurrent-replicaset-syncs=2",
	)
	var out io.Writer
	if output {
		out = os.Stderr
	}
	// Its exit status is no news: Stop interrupts it, or kills it.
	e.kcm, err = Run(cmd, out, nil)
	return err
}

// Stop stops everything Start started and waits for the processes to exit.
func (e *Env) Stop() error {
	var errs []error
	if e.kcm != nil {
		_ = e.kcm.Stop(os.Interrupt, 10*time.Second)
		e.kcm = nil
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	e.stopTakenOver()
	errs = append(errs, e.Env.Stop())
	return errors.Join(errs...)
}

// T is the part of testing.TB that Namespace uses: the package is a
// runtime library, and does not import testing.
type T interface {
	Helper()
	Name() string
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Namespace creates a namespace of its own for one test and deletes it when
// the test ends.
func (e *Env) Namespace(t T) string {
	t.Helper()
	ctx := context.Background()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	name = strings.Trim(name, "-") + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = e.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// Processes lists the PIDs of running processes whose command line contains
// marker: a test uses it to prove that Stop left nothing behind.
func Processes(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), marker) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err == nil && isZombie(string(stat)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// isZombie reports whether a /proc/PID/stat line is a zombie's.
func isZombie(stat string) bool {
	s, ok := procState(stat)
	return ok && s == 'Z'
}

// procState is the state field of a /proc/PID/stat or /proc/PID/task/TID/stat
// line, "pid (comm) S ...". It follows the command name, which is in
// parentheses and may itself hold them.
func procState(stat string) (byte, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, false
	}
	return stat[i+2], true
}

// MountSecret does the kubelet's part for a process run on this machine in
// place of a pod: it keeps the files of the Secret namespace/name in dir,
// as a Secret volume would, until ctx is done. Call it in a goroutine.
func (e *Env) MountSecret(ctx context.Context, namespace, name, dir string) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	written := map[string]string{}
	for {
		secret, err := e.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for file, data := range secret.Data {
				if written[file] != string(data) && os.WriteFile(filepath.Join(dir, file), data, 0o600) == nil {
					written[file] = string(data)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
