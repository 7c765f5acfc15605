package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
)

// The injector's namespace, account and certificate Secret, as
// config/default installs them.
const (
	InjectorNamespace  = "k8s-elector-system"
	InjectorAccount    = "k8s-elector-injector"
	InjectorCertSecret = "k8s-elector-injector-cert"
)

// InjectorOptions say how to run the injector as a local process.
type InjectorOptions struct {
	// Bin is the injector binary.
	Bin string
	// Dir holds its kubeconfig, certificates and log.
	Dir string
	// Objs are the rendered objects of config/default (with any
	// components): all but the injector's Deployment, Service and
	// PodDisruptionBudget are applied, the webhooks pointed at the local
	// process, and the Deployment's args are the process's.
	Objs []*unstructured.Unstructured
	// Flags are set beside the Deployment's args: "-name": "value".
	Flags map[string]string
}

// Injector is the injector running as a local process.
type Injector struct {
	*Process
	// Args are the process's args; Objs what was applied.
	Args []string
	Objs []*unstructured.Unstructured
	// ProbeAddr serves /readyz; LogPath is the process's log.
	ProbeAddr string
	LogPath   string

	stopMount context.CancelFunc
}

// StartInjector applies o.Objs and starts the injector as config/default's
// Deployment runs it, with a token of its own service account, its
// certificate Secret mounted into its certificate folder (the kubelet's
// part), and only what must differ on one machine changed: its listeners,
// that folder, localhost in its certificate, and its credentials. It
// returns once /readyz answers.
func (e *Env) StartInjector(ctx context.Context, o InjectorOptions) (*Injector, error) {
	webhookPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	probePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	keep, args, err := localInjector(o.Objs, fmt.Sprintf("https://localhost:%d", webhookPort))
	if err != nil {
		return nil, err
	}
	if err := e.Apply(ctx, e.Config, keep, false); err != nil {
		return nil, err
	}
	token, err := Token(ctx, e.Client, InjectorNamespace, InjectorAccount, nil)
	if err != nil {
		return nil, err
	}
	raw, err := Kubeconfig(e.Config, token)
	if err != nil {
		return nil, err
	}
	kubeconfig, certDir := filepath.Join(o.Dir, "injector.kubeconfig"), filepath.Join(o.Dir, "injector-certs")
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		return nil, err
	}
	flags := map[string]string{
		"-kubeconfig":                kubeconfig,
		"-namespace":                 InjectorNamespace,
		"-cert-dns-names":            "localhost",
		"-cert-dir":                  certDir,
		"-webhook-port":              fmt.Sprint(webhookPort),
		"-metrics-bind-address":      "0",
		"-health-probe-bind-address": fmt.Sprintf("127.0.0.1:%d", probePort),
	}
	for k, v := range o.Flags {
		flags[k] = v
	}
	args = setFlags(args, flags)

	i := &Injector{
		Args: args, Objs: keep, ProbeAddr: flags["-health-probe-bind-address"],
		LogPath: filepath.Join(o.Dir, "injector.log"),
	}
	logFile, err := os.Create(i.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	// Its own process group: a Ctrl-C in a terminal reaches the program
	// that started it, which stops it in its turn.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if i.Process, err = Run(cmd, logFile, nil); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		<-i.Done()
		logFile.Close()
	}()
	var mountCtx context.Context
	mountCtx, i.stopMount = context.WithCancel(context.Background())
	go e.MountSecret(mountCtx, InjectorNamespace, InjectorCertSecret, certDir)

	client := http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if i.Exited() {
			i.stopMount()
			return nil, fmt.Errorf("the injector exited (%v); its log ends:\n%s", i.Err(), i.Tail(20))
		}
		if resp, err := client.Get("http://" + i.ProbeAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return i, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, errors.Join(fmt.Errorf("the injector was not ready within 60s; its log ends:\n%s", i.Tail(20)), i.Stop())
		}
	}
}

// Stop ends the injector as the kubelet would: SIGTERM, then SIGKILL after
// its Deployment's grace period.
func (i *Injector) Stop() error {
	defer i.stopMount()
	return i.Process.Stop(syscall.SIGTERM, 40*time.Second)
}

// FreePort is a TCP port free on loopback now, for a local process to
// listen on: every process here shares one network.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Token asks the TokenRequest API for an hour's token of the service
// account, bound to pod when given, as the kubelet does for a projected
// token. It retries for 30 seconds while the account does not exist yet
// or the API server does not answer; a request the API server refuses
// (forbidden, invalid, a pod of another UID) fails at once.
func Token(ctx context.Context, client kubernetes.Interface, ns, account string, pod *corev1.Pod) (string, error) {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, account, req, metav1.CreateOptions{})
		if err == nil {
			return tr.Status.Token, nil
		}
		if time.Now().After(deadline) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) ||
			apierrors.IsBadRequest(err) || apierrors.IsConflict(err) {
			return "", fmt.Errorf("token of service account %s/%s: %w", ns, account, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("token of service account %s/%s: %w (last: %w)", ns, account, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
