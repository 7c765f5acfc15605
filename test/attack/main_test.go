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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// Where config/ installs the injector.
const (
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
		if err := current.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

// injector is the injector binary running as a local process against the
// objects of one rendering of config/.
type injector struct {
	*controlplane.Injector
	dir string
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
	objs, err := renderConfig(dir, component)
	if err != nil {
		return nil, err
	}
	i, err := env.StartInjector(context.Background(), controlplane.InjectorOptions{Bin: filepath.Join(bin, "injector"), Dir: dir, Objs: objs, Flags: flags})
	if err != nil {
		return nil, err
	}
	return &injector{Injector: i, dir: dir, component: component, flags: flags}, nil
}

// useInjector replaces the running injector with one of config/default plus
// component and flags, for the rest of the test, and puts the default one
// back when the test ends. Objects of the old rendering that the new one
// lacks are deleted, so that a component's extra rights end with it.
func useInjector(t *testing.T, component string, flags map[string]string) {
	t.Helper()
	old := current
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	// Registered first, so that the default injector is back even when
	// the other one does not start.
	t.Cleanup(func() {
		if t.Failed() && current != old {
			t.Logf("injector (%s %v) log ends:\n%s", component, flags, current.Tail(40))
		}
		prev := current
		if prev != old {
			if err := prev.Stop(); err != nil {
				t.Error(err)
			}
		}
		back, err := startInjector(old.dir, old.component, old.flags)
		if err != nil {
			t.Fatalf("restarting the default injector: %v", err)
		}
		current = back
		if err := deleteMissing(prev.Objs, back.Objs); err != nil {
			t.Error(err)
		}
	})
	next, err := startInjector(t.TempDir(), component, flags)
	if err != nil {
		t.Fatal(err)
	}
	current = next
	if err := deleteMissing(old.Objs, next.Objs); err != nil {
		t.Fatal(err)
	}
}
