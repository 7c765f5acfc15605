// Package attack attacks the rights that the injector hands out, on the
// local control plane, as a cluster would see them: config/default is
// applied as shipped (its ClusterRoles, its ValidatingAdmissionPolicies,
// its webhook configuration pointed at a local URL), the injector binary
// runs with its Deployment's flags as its own service account, and every
// actor acts with a real service-account token from the TokenRequest API:
// a deployer who may create and patch pods in one namespace, the service
// accounts of injected pods (tokens bound to their pod, as the kubelet
// mints them), and the injector itself.
//
// Every attack must be refused, each for the reason named (the RBAC
// authorizer, a named policy, or the webhook), and every operation an
// elector needs must still work with the same tokens.
package attack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// Where config/ installs the injector.
const (
	injectorNamespace = "k8s-elector-system"
	injectorAccount   = "k8s-elector-injector"
	// webhookName is the injection webhook of config/webhook.
	webhookName = "inject.elector.vapor.io"
	// sliceWebhookName is its check of electors' EndpointSlice writes.
	sliceWebhookName = "endpointslice.elector.vapor.io"
)

var (
	env *controlplane.Env
	// bin holds the injector and elector built from this tree.
	bin string
	// current is the injector now running.
	current *injector
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "attack-test-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	bin = dir
	for name, pkg := range map[string]string{"injector": "./cmd/injector", "elector": "./cmd/elector"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		build.Dir = "../.."
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return fail(fmt.Errorf("build %s: %w", pkg, err))
		}
	}

	// Quiet: the tests report what they expect, and the deprecation
	// warnings for Endpoints (a lock type under test) are expected.
	ctrl.SetLogger(logr.Discard())
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	// No kube-controller-manager: the tests make their service accounts,
	// and no pod here ever runs.
	env, err = controlplane.Start(controlplane.Options{})
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()

	current, err = startInjector(dir, "", nil)
	if err != nil {
		return fail(err)
	}
	// The processes first: the API server waits for its clients' open
	// watches before it exits.
	defer func() {
		if err := current.stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

// injector is the injector binary running as a local process against the
// objects of one rendering of config/.
type injector struct {
	dir    string
	objs   []*unstructured.Unstructured
	args   []string
	cmd    *exec.Cmd
	done   chan struct{}
	cancel context.CancelFunc
	// component is the config/ component rendered with config/default, if
	// any; flags are the flags set beside config/default's.
	component string
	flags     map[string]string
}

// startInjector applies config/default (with component, a folder under
// config/, when not empty), and starts the injector as its own service
// account with the flags of its Deployment, overridden by flags. It returns
// once the injector is ready: its certificate in place and trusted by the
// webhook configuration, and its webhook serving.
func startInjector(dir, component string, flags map[string]string) (*injector, error) {
	ctx := context.Background()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	probePort, err := freePort()
	if err != nil {
		return nil, err
	}
	objs, err := renderConfig(dir, component)
	if err != nil {
		return nil, err
	}
	keep, args, err := controlplane.LocalInjector(objs, fmt.Sprintf("https://localhost:%d", port))
	if err != nil {
		return nil, err
	}
	if err := env.Apply(ctx, env.Config, keep, false); err != nil {
		return nil, err
	}
	token, err := tokenRequest(ctx, injectorNamespace, injectorAccount, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "injector.kubeconfig")
	raw, err := controlplane.Kubeconfig(env.Config, token)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "injector-certs")
	values := map[string]string{
		"-kubeconfig":                kubeconfig,
		"-namespace":                 injectorNamespace,
		"-cert-dns-names":            "localhost",
		"-cert-dir":                  certDir,
		"-webhook-port":              fmt.Sprint(port),
		"-metrics-bind-address":      "0",
		"-health-probe-bind-address": fmt.Sprintf("127.0.0.1:%d", probePort),
	}
	for k, v := range flags {
		values[k] = v
	}
	args = controlplane.SetFlags(args, values)

	logFile, err := os.Create(filepath.Join(dir, "injector.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "injector"), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	mountCtx, cancel := context.WithCancel(ctx)
	i := &injector{dir: dir, objs: keep, args: args, cmd: cmd, done: make(chan struct{}), cancel: cancel, component: component, flags: flags}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(i.done)
	}()
	// The kubelet's part: the certificate Secret, as a volume.
	go env.MountSecret(mountCtx, injectorNamespace, "k8s-elector-injector-cert", certDir)

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-i.done:
			cancel()
			return nil, fmt.Errorf("the injector exited: %s", i.logTail())
		default:
		}
		if ready(probePort) {
			return i, nil
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("the injector was not ready within 60s: %s", i.logTail()), i.stop())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ready(port int) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (i *injector) logTail() string {
	raw, _ := os.ReadFile(filepath.Join(i.dir, "injector.log"))
	const max = 4000
	if len(raw) > max {
		raw = raw[len(raw)-max:]
	}
	return string(raw)
}

// stop ends the injector as the kubelet would: SIGTERM, then SIGKILL after
// its Deployment's grace period.
func (i *injector) stop() error {
	defer i.cancel()
	_ = i.cmd.Process.Signal(os.Interrupt)
	select {
	case <-i.done:
		return nil
	case <-time.After(40 * time.Second):
		_ = i.cmd.Process.Kill()
		<-i.done
		return errors.New("the injector did not stop within 40s of SIGTERM")
	}
}

// useInjector replaces the running injector with one of config/default plus
// component and flags, for the rest of the test, and puts the default one
// back when the test ends. Objects of the old rendering that the new one
// lacks are deleted, so that a component's extra rights end with it.
func useInjector(t *testing.T, component string, flags map[string]string) {
	t.Helper()
	old := current
	if err := old.stop(); err != nil {
		t.Fatal(err)
	}
	// Registered first, so that the default injector is back even when
	// the other one does not start.
	t.Cleanup(func() {
		if t.Failed() && current != old {
			t.Logf("injector (%s %v) log ends:\n%s", component, flags, current.logTail())
		}
		prev := current
		if prev != old {
			if err := prev.stop(); err != nil {
				t.Error(err)
			}
		}
		back, err := startInjector(old.dir, old.component, old.flags)
		if err != nil {
			t.Fatalf("restarting the default injector: %v", err)
		}
		current = back
		if err := deleteMissing(prev.objs, back.objs); err != nil {
			t.Error(err)
		}
	})
	next, err := startInjector(t.TempDir(), component, flags)
	if err != nil {
		t.Fatal(err)
	}
	current = next
	if err := deleteMissing(old.objs, next.objs); err != nil {
		t.Fatal(err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
