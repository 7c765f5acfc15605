// Package injector tests the injector against the local control plane, with
// the API server calling the webhook over TLS: the MutatingWebhookConfiguration
// of config/webhook is installed as shipped (envtest only points it at the
// local server and fills its caBundle), and the handler and grant reconciler
// run in a controller-runtime manager under the injector's own service
// account, bound to config/rbac, with the ValidatingAdmissionPolicies of
// config/policy in force.
package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// systemNamespace is the injector's namespace in config/: the shipped
// webhook configuration leaves its pods alone.
const systemNamespace = controlplane.InjectorNamespace

const testImage = "ghcr.io/vapor-ware/k8s-elector:test"

// injectorVersion is the version stamped into the injector binary, as the
// Makefile stamps a release's, and given to the in-process handler.
const injectorVersion = "v0.0.0-test"

var (
	env         *controlplane.Env
	electorBin  string
	injectorBin string
	// requests counts the admission requests the webhook server received,
	// by namespace/name of the pod.
	requests = &counter{seen: map[string]int{}}
	// injectorConfig talks to the API server as the injector's service
	// account.
	injectorConfig *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "injector-test-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	electorBin, injectorBin = filepath.Join(dir, "elector"), filepath.Join(dir, "injector")
	for bin, args := range map[string][]string{
		electorBin:  {"./cmd/elector"},
		injectorBin: {"-ldflags=-X main.version=" + injectorVersion, "./cmd/injector"},
	} {
		build := exec.Command("go", append([]string{"build", "-o", bin}, args...)...)
		build.Dir = "../.."
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			return fail(fmt.Errorf("build %s: %w", args[len(args)-1], err))
		}
	}

	// Errors only: the tests report what they expect.
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))

	// 1. The control plane, with the shipped webhook configuration.
	whc, err := shippedWebhookConfiguration()
	if err != nil {
		return fail(err)
	}
	path := *whc.Webhooks[0].ClientConfig.Service.Path
	env, err = controlplane.Start(controlplane.Options{
		ControllerManager: true,
		Webhook: envtest.WebhookInstallOptions{
			MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{whc},
		},
	})
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()

	// 2. The injector's namespace and RBAC, as config/rbac ships them, and
	// the policies of config/policy.
	ctx := context.Background()
	for _, f := range []string{"manager/namespace.yaml", "rbac/service_account.yaml", "rbac/role.yaml", "rbac/role_binding.yaml", "rbac/namespace_role.yaml", "rbac/pod_label_role.yaml",
		"policy/injected_label.yaml", "policy/pod_label.yaml", "policy/injector.yaml"} {
		if err := apply(ctx, filepath.Join("../../config", f), false); err != nil {
			return fail(err)
		}
	}
	token, err := controlplane.Token(ctx, env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		return fail(err)
	}
	injectorConfig = rest.AnonymousClientConfig(env.Config)
	injectorConfig.BearerToken = token
	injector, err := kubernetes.NewForConfig(injectorConfig)
	if err != nil {
		return fail(err)
	}
	if err := waitForPolicies(ctx, injector); err != nil {
		return fail(err)
	}

	// 3. The handler and the reconciler in a manager, as cmd/injector
	// wires them, and the webhook server on the port envtest chose.
	mgrCtx, cancel := context.WithCancel(ctx)
	done, err := startManager(mgrCtx, path)
	if err != nil {
		cancel()
		return fail(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	return m.Run()
}

// shippedWebhookConfiguration reads the MutatingWebhookConfiguration of
// config/webhook/manifests.yaml. Its ValidatingWebhookConfiguration, for
// electors' EndpointSlices, is not installed here: test/attack runs it.
func shippedWebhookConfiguration() (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	raw, err := os.ReadFile("../../config/webhook/manifests.yaml")
	if err != nil {
		return nil, err
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return nil, errors.New("config/webhook/manifests.yaml: no MutatingWebhookConfiguration")
		} else if err != nil {
			return nil, fmt.Errorf("config/webhook/manifests.yaml: %w", err)
		}
		if obj.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		whc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, whc); err != nil {
			return nil, fmt.Errorf("config/webhook/manifests.yaml: %w", err)
		}
		if len(whc.Webhooks) != 1 || whc.Webhooks[0].ClientConfig.Service == nil || whc.Webhooks[0].ClientConfig.Service.Path == nil {
			return nil, errors.New("config/webhook/manifests.yaml: want one mutating webhook with a service path")
		}
		return whc, nil
	}
}

func startManager(ctx context.Context, path string) (<-chan error, error) {
	opts := env.Env.WebhookInstallOptions
	settings := webhook.DefaultSettings()
	settings.ElectorImage = testImage
	settings.InjectorVersion = injectorVersion
	settings.NativeSidecars = true
	handler, err := webhook.NewHandler(settings)
	if err != nil {
		return nil, err
	}
	srv := crwebhook.NewServer(crwebhook.Options{Host: opts.LocalServingHost, Port: opts.LocalServingPort, CertDir: opts.LocalServingCertDir})
	srv.Register(path, &crwebhook.Admission{Handler: requests.wrap(handler)})
	mgr, err := ctrl.NewManager(injectorConfig, ctrl.Options{
		Scheme:  clientgoscheme.Scheme,
		Cache:   cache.Options{ByObject: grants.CacheByObject()},
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(srv); err != nil {
		return nil, err
	}
	r := &grants.Reconciler{
		Client:           reconcilerCalls.client(mgr.GetClient()),
		APIReader:        reconcilerCalls.reader(mgr.GetAPIReader()),
		Recorder:         mgr.GetEventRecorder("k8s-elector-injector"),
		AllowedLockTypes: settings.AllowedLockTypes,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	// Wait for the TLS port, as kubebuilder's webhook suite does.
	addr := net.JoinHostPort(opts.LocalServingHost, strconv.Itoa(opts.LocalServingPort))
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			return done, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("webhook server did not serve on %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// counter wraps the handler to record which pods the API server sent.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *counter) wrap(h admission.Handler) admission.Handler {
	return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		c.mu.Lock()
		c.seen[req.Namespace+"/"+req.Name]++
		c.mu.Unlock()
		return h.Handle(ctx, req)
	})
}

func (c *counter) count(ns, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[ns+"/"+name]
}

// apply creates every object of a YAML file, or only checks that the API
// server would (a server-side dry run).
func apply(ctx context.Context, path string, dryRun bool) error {
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		var opts []client.CreateOption
		if dryRun {
			opts = append(opts, client.DryRunAll)
		}
		if err := c.Create(ctx, obj, opts...); err != nil {
			return fmt.Errorf("%s: %s %s: %w", path, obj.GetKind(), obj.GetName(), err)
		}
	}
}

// serviceAccount creates a service account in ns.
func serviceAccount(t *testing.T, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctxFor(t, 10*time.Second), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeconfigFor writes a kubeconfig with token, for a process.
func kubeconfigFor(t *testing.T, token string) string {
	t.Helper()
	out, err := controlplane.Kubeconfig(env.Config, token)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func clientFor(t *testing.T, token string) kubernetes.Interface {
	t.Helper()
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// electorPod is a pod that asks for an elector and passes Pod Security
// "restricted".
func electorPod(name, sa string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   new(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.k8s.io/pause:3.10",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: new(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls f every 100ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
