package injector

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

const certSecret = "k8s-elector-injector-cert"

// TestSelfManagedCertificates runs the injector binary, as its service
// account with config/rbac's rights, from nothing: it makes its certificate
// Secret, writes the CA into the shipped webhook configuration, becomes
// ready, and the API server calls it over TLS. Then the certificate is lost
// and remade, and admission keeps working.
func TestSelfManagedCertificates(t *testing.T) {
	ctx := ctxFor(t, 150*time.Second)
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")

	// 1. The shipped webhook configuration, pointing at the binary by URL
	// instead of at the one envtest serves, with no caBundle.
	whc, err := shippedWebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := fmt.Sprintf("https://localhost:%d%s", port, *whc.Webhooks[0].ClientConfig.Service.Path)
	whc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	swapWebhookConfiguration(t, whc)

	// 2. The injector, and the kubelet's part: the Secret mounted at -cert-dir.
	certDir := t.TempDir()
	go env.MountSecret(ctxFor(t, 5*time.Minute), systemNamespace, certSecret, certDir)
	token, err := controlplane.Token(ctx, env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	probe := freePort(t)
	inj := startInjector(t,
		"-kubeconfig="+kubeconfigFor(t, token),
		"-namespace="+systemNamespace,
		"-elector-image="+testImage,
		fmt.Sprintf("-webhook-port=%d", port),
		"-cert-dir="+certDir,
		"-cert-dns-names=localhost",
		"-metrics-bind-address=0",
		fmt.Sprintf("-health-probe-bind-address=127.0.0.1:%d", probe),
		"-leader-elect",
	)

	// 3. Ready only once the certificate is in place and trusted.
	eventually(t, 60*time.Second, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", probe))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz = %s", resp.Status)
		}
		return nil
	})
	firstCA := caBundleMatchesSecret(t)

	// 4. The API server trusts it: a pod is injected, as a native sidecar
	// (-native-sidecars=auto on a 1.29+ API server).
	pod := createInjected(t, ns, "through-the-binary")
	if c := webhook.ElectorContainer(pod); c.RestartPolicy == nil {
		t.Errorf("-native-sidecars=auto made a plain container on a %s API server", "1.29+")
	}

	// 5. Rotation: a Secret emptied (lost, corrupted) is remade with a new
	// CA and certificate, and admission works again with them.
	secret, err := env.Client.CoreV1().Secrets(systemNamespace).Get(ctx, certSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret.Data = nil
	if _, err := env.Client.CoreV1().Secrets(systemNamespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if ca := caBundleOf(t); bytes.Equal(ca, firstCA) || len(ca) == 0 {
			return fmt.Errorf("the caBundle is still the first CA")
		}
		return nil
	})
	caBundleMatchesSecret(t)
	createInjected(t, ns, "after-rotation")

	inj.terminate(t)
}

// TestExternalCertificates: with -cert-management=external the injector
// waits, unready, for a certificate to be mounted, then serves it.
func TestExternalCertificates(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	token, err := controlplane.Token(ctx, env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	port, probe := freePort(t), freePort(t)
	inj := startInjector(t,
		"-kubeconfig="+kubeconfigFor(t, token),
		"-namespace="+systemNamespace,
		"-cert-management=external",
		fmt.Sprintf("-webhook-port=%d", port),
		"-cert-dir="+certDir,
		"-metrics-bind-address=0",
		fmt.Sprintf("-health-probe-bind-address=127.0.0.1:%d", probe),
		"-leader-elect",
	)
	get := func(path string) (int, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", probe, path))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	eventually(t, 20*time.Second, func() error {
		_, err := get("/healthz")
		return err
	})
	if code, err := get("/readyz"); err != nil || code == http.StatusOK {
		t.Fatalf("GET /readyz without a certificate = %d, %v; want not ready", code, err)
	}

	// Mount a certificate: envtest's serving certificate for localhost.
	src := env.Env.WebhookInstallOptions.LocalServingCertDir
	for _, f := range []string{"tls.key", "tls.crt"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, func() error {
		if code, err := get("/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("GET /readyz = %d, %v", code, err)
		}
		return nil
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.Env.WebhookInstallOptions.LocalServingCAData)
	// The client must offer TLS 1.0 and 1.1 itself (Go's refuses them by
	// default), so that a refusal is the server's.
	conn, err := tls.Dial("tcp", fmt.Sprintf("localhost:%d", port), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Errorf("the webhook server accepted TLS 1.1")
	} else if !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.1 failed for another reason than the server's refusal of its version: %v", err)
	}
	conn, err = tls.Dial("tcp", fmt.Sprintf("localhost:%d", port), &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("the webhook server's certificate is not the mounted one: %v", err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Errorf("the webhook server negotiated HTTP/2")
	}
	conn.Close()
	inj.terminate(t)
}

// swapWebhookConfiguration replaces the configuration envtest installed
// with whc until the test ends.
func swapWebhookConfiguration(t *testing.T, whc *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	api := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	saved, err := api.Get(ctx, whc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Delete(ctx, whc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := ctxFor(t, 10*time.Second)
		_ = api.Delete(ctx, whc.Name, metav1.DeleteOptions{})
		saved.ObjectMeta = metav1.ObjectMeta{Name: saved.Name, Labels: saved.Labels}
		if _, err := api.Create(ctx, saved, metav1.CreateOptions{}); err != nil {
			t.Errorf("restoring the webhook configuration: %v", err)
		}
	})
	if _, err := api.Create(ctx, whc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func caBundleOf(t *testing.T) []byte {
	t.Helper()
	whc, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctxFor(t, 10*time.Second), "k8s-elector-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return whc.Webhooks[0].ClientConfig.CABundle
}

// caBundleMatchesSecret checks that the webhook trusts the Secret's CA, and
// returns it.
func caBundleMatchesSecret(t *testing.T) []byte {
	t.Helper()
	s, err := env.Client.CoreV1().Secrets(systemNamespace).Get(ctxFor(t, 10*time.Second), certSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := caBundleOf(t)
	if len(ca) == 0 || !bytes.Equal(ca, s.Data["ca.crt"]) {
		t.Fatalf("the webhook's caBundle (%d bytes) is not the Secret's ca.crt (%d bytes)", len(ca), len(s.Data["ca.crt"]))
	}
	return ca
}

// createInjected creates an annotated pod, retrying while the certificate
// reaches the webhook server, and checks it was injected.
func createInjected(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 60*time.Second, func() error {
		var err error
		pod, err = env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 10*time.Second),
			electorPod(name, "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{})
		return err
	})
	if webhook.ElectorContainer(pod) == nil {
		t.Fatalf("pod %s was not injected", name)
	}
	return pod
}

// process is the injector run by a test, its log kept whole.
type process struct {
	*controlplane.Process
	mu  sync.Mutex
	buf strings.Builder
}

func (p *process) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// terminate sends SIGTERM and checks that the injector exits cleanly.
func (p *process) terminate(t *testing.T) {
	t.Helper()
	if err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Error(err)
	} else if p.Err() != nil {
		t.Errorf("after SIGTERM the injector exited with %v", p.Err())
	}
}

func startInjector(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{}
	cmd := exec.Command(injectorBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var err error
	p.Process, err = controlplane.Run(cmd, nil, func(line string) {
		p.mu.Lock()
		p.buf.WriteString(line + "\n")
		p.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("injector logs:\n%s", p.logs())
		}
	})
	return p
}

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
