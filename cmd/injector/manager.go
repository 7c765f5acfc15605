package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/vapor-ware/k8s-elector/internal/cli"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// nativeSidecarsSince is the first Kubernetes version with native sidecars
// on by default.
var nativeSidecarsSince = utilversion.MustParseGeneric("1.29.0")

// run wires the manager: the webhook server once its certificates are in
// place, the grant reconciler under leader election, probes and metrics.
func (o *options) run(ctx context.Context) error {
	log := ctrl.Log.WithName("injector")
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	if o.settings.NativeSidecars, err = o.nativeSidecars(cfg); err != nil {
		return err
	}
	handler, err := webhook.NewHandler(o.settings)
	if err != nil {
		return cli.Usage(err)
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: clientgoscheme.Scheme,
		Cache: cache.Options{
			ByObject:         grants.CacheByObject(),
			DefaultTransform: cache.TransformStripManagedFields(),
		},
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "k8s-elector-injector",
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	// 1. Certificates: ready closes once the serving certificate is on disk
	// (and, when self-managed, its CA is in the webhook configuration).
	ready := make(chan struct{})
	if o.certManagement == certsSelf {
		if err := o.addRotator(ctx, mgr, ready); err != nil {
			return err
		}
	} else {
		go o.waitForCertFiles(ctx, ready)
	}

	// 2. The webhook server, started only once there is a certificate to
	// serve: it cannot start without one.
	srv := crwebhook.NewServer(crwebhook.Options{
		Port:    o.webhookPort,
		CertDir: o.certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			// HTTP/2 off: the API server speaks HTTP/1.1 to webhooks, and
			// it closes CVE-2023-44487 (rapid reset) and CVE-2023-39325.
			c.NextProtos = []string{"http/1.1"}
		}},
	})
	// Behind a size check: a review too large to decode is denied with its
	// cause, instead of an answer the API server cannot match to the pod.
	srv.Register(webhook.PodPath, webhook.NewHTTPHandler(handler))
	// An EndpointSlice is small (at most 1000 endpoints): controller-runtime's
	// own size limit is enough.
	srv.Register(webhook.EndpointSlicePath, &crwebhook.Admission{Handler: &webhook.EndpointSliceHandler{
		Cache: mgr.GetCache(),
		Live:  mgr.GetAPIReader(),
	}})
	// The EndpointSlice webhook reads pods from the cache on every replica,
	// not only on the leader, whose reconciler's watch would start the pod
	// informer otherwise: started now, it has synced before a replica serves
	// (a replica whose cache has not, reads live).
	if _, err := mgr.GetCache().GetInformer(ctx, &corev1.Pod{}); err != nil {
		return fmt.Errorf("setting up the pod cache: %w", err)
	}
	if err := mgr.Add(afterReady{ready: ready, srv: srv}); err != nil {
		return err
	}

	// 3. The grant reconciler, on the leader only. It grants what each
	// pod's elector runs, so it needs no default lock type, only the lock
	// types the admin allowed.
	r := &grants.Reconciler{
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Recorder:         mgr.GetEventRecorder("k8s-elector-injector"),
		AllowedLockTypes: o.settings.AllowedLockTypes,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the grant reconciler: %w", err)
	}
	// The gauge of the injected pods whose sidecar another release
	// injected, counted by the leader from the reconciler's pod cache.
	if err := metrics.Registry.Register(&grants.OutdatedPods{
		Reader:       mgr.GetCache(),
		Version:      o.settings.InjectorVersion,
		ElectorImage: o.settings.ElectorImage,
		Elected:      mgr.Elected(),
	}); err != nil {
		return fmt.Errorf("registering the metric %s: %w", grants.OutdatedPodsMetric, err)
	}

	// 4. Probes: ready when the webhook serves TLS with a trusted certificate.
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-ready:
			return srv.StartedChecker()(req)
		default:
			return errors.New("the webhook's certificate is not in place yet")
		}
	}); err != nil {
		return err
	}

	log.Info("Starting", "version", version, "electorImage", o.settings.ElectorImage,
		"nativeSidecars", o.settings.NativeSidecars, "certManagement", o.certManagement)
	return mgr.Start(ctx)
}

func (o *options) restConfig() (*rest.Config, error) {
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, cli.Usagef("-kubeconfig: %v", err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration: set -kubeconfig or $KUBECONFIG, or run in a pod: %w", err)
	}
	return cfg, nil
}

// nativeSidecars reads -native-sidecars, asking the API server for its
// version under auto. It is asked once: an upgrade restarts the injector
// anyway, and a per-pod answer would cost every admission a request.
func (o *options) nativeSidecars(cfg *rest.Config) (bool, error) {
	if o.nativeSidecar != "auto" {
		return o.nativeSidecar == "true", nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("-native-sidecars=auto: asking the API server for its version: %w (or set -native-sidecars=true or false)", err)
	}
	v, err := utilversion.ParseGeneric(info.GitVersion)
	if err != nil {
		return false, fmt.Errorf("-native-sidecars=auto: API server version %q: %w (set -native-sidecars=true or false)", info.GitVersion, err)
	}
	return v.AtLeast(nativeSidecarsSince), nil
}

// addRotator keeps a CA and serving certificate in the Secret -cert-secret:
// made when missing, renewed before expiry, its CA written into the webhook
// configurations of the name -webhook-configuration, mutating (injection)
// and validating (EndpointSlices). The Secret is mounted at -cert-dir by the
// Deployment; the kubelet brings each new certificate to every replica.
func (o *options) addRotator(ctx context.Context, mgr manager.Manager, ready chan struct{}) error {
	if err := ensureSecret(ctx, mgr.GetConfig(), o.namespace, o.certSecret); err != nil {
		return err
	}
	names := []string{
		o.webhookService + "." + o.namespace + ".svc.cluster.local",
		o.webhookService + "." + o.namespace,
	}
	if o.certDNSNames != "" {
		names = append(names, strings.Split(o.certDNSNames, ",")...)
	}
	return rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: o.namespace, Name: o.certSecret},
		CertDir:        o.certDir,
		CAName:         "k8s-elector-injector-ca",
		CAOrganization: "k8s-elector",
		DNSName:        o.webhookService + "." + o.namespace + ".svc",
		ExtraDNSNames:  names,
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: o.webhookConfig, Type: rotator.Mutating},
			{Name: o.webhookConfig, Type: rotator.Validating},
		},
		// Every replica rotates, so that every replica becomes ready; they
		// agree through the Secret's resourceVersion.
		RequireLeaderElection:  false,
		EnableReadinessCheck:   true,
		RotationCheckFrequency: rotationCheck,
		FieldOwner:             "k8s-elector-injector",
	})
}

// ensureSecret creates an empty Secret for the rotator, which only updates
// one. The Deployment mounts it optionally, so the first replica can start.
func ensureSecret(ctx context.Context, cfg *rest.Config, ns, name string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: ns,
		Labels: map[string]string{grants.LabelManagedBy: grants.ManagedBy},
	}}
	_, err = cs.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the certificate Secret %s/%s: %w", ns, name, err)
	}
	return nil
}

// waitForCertFiles closes ready once -cert-dir holds a certificate, as
// mounted by cert-manager or another tool.
func (o *options) waitForCertFiles(ctx context.Context, ready chan struct{}) {
	log := ctrl.Log.WithName("certs")
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		for _, f := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(o.certDir, f)); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return
	}
	log.Info("Certificates are in place", "dir", o.certDir)
	close(ready)
}

// afterReady starts the webhook server once ready closes. Like the manager's
// own webhook server, it runs on every replica, not only the leader.
type afterReady struct {
	ready <-chan struct{}
	srv   crwebhook.Server
}

func (a afterReady) Start(ctx context.Context) error {
	select {
	case <-a.ready:
	case <-ctx.Done():
		return nil
	}
	return a.srv.Start(ctx)
}

func (afterReady) NeedLeaderElection() bool { return false }
