// Command injector is the elector's admission webhooks: it adds the elector
// sidecar to pods that ask for it by annotation, checks electors'
// EndpointSlice writes, and keeps a Role and RoleBinding for their service
// accounts.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/vapor-ware/k8s-elector/internal/cli"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// version is stamped at build time with -ldflags "-X main.version=...". The
// default elector image is the one of the same release.
var version = "dev"

// Certificate management modes of -cert-management.
const (
	certsSelf     = "self"
	certsExternal = "external"
)

type options struct {
	settings      webhook.Settings
	nativeSidecar string

	kubeconfig     string
	namespace      string
	webhookPort    int
	certDir        string
	certManagement string
	certSecret     string
	certDNSNames   string
	webhookConfig  string
	webhookService string
	metricsAddr    string
	probeAddr      string
	leaderElect    bool
	verbosity      int
	version        bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && o.version {
		fmt.Fprintln(stderr, "injector", version)
		return 0
	}
	if err == nil {
		log := logr.FromSlogHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.Level(-o.verbosity)}))
		ctrl.SetLogger(log)
		klog.SetLogger(log.WithName("client-go"))
		err = o.run(ctrl.SetupSignalHandler())
	}
	if err != nil {
		return cli.Fail(stderr, "injector", err)
	}
	return 0
}

// parse reads the command line and checks every flag, so that a bad one
// stops the injector at start-up with the flag's name and the fix.
func parse(args []string, stderr io.Writer) (*options, error) {
	d := webhook.DefaultSettings()
	d.InjectorVersion = version
	o := &options{settings: d}
	var lockType string
	allowed := lockTypes(d.AllowedLockTypes)
	cpu, mem := quantity{d.CPURequest}, quantity{d.MemoryRequest}
	cpuLimit, memLimit := quantity{d.CPULimit}, quantity{d.MemoryLimit}
	var port int

	fs := flag.NewFlagSet("injector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.settings.ElectorImage, "elector-image", "ghcr.io/vapor-ware/k8s-elector:"+version,
		"The elector sidecar's image; by default the elector of the injector's release.")
	fs.IntVar(&port, "port", int(d.Port), "The elector's HTTP port in injected pods.")
	fs.DurationVar(&o.settings.TTL, "ttl", 0, "The lease duration of injected electors. If not set, the elector's default, "+election.DefaultTTL.String()+".")
	fs.StringVar(&lockType, "lock-type", "",
		"The lock object kind of injected electors: leases, configmaps or endpoints; one of -allowed-lock-types. If not set, the elector's default, leases.")
	fs.Var(&allowed, "allowed-lock-types",
		"The comma-separated lock object kinds pods may use. "+
			"Endpoints is off by default: the right to update an Endpoints object is the right to steer its Service's traffic.")
	fs.Var(&cpu, "cpu-request", "The sidecar's CPU request.")
	fs.Var(&mem, "memory-request", "The sidecar's memory request.")
	fs.Var(&cpuLimit, "cpu-limit",
		"The sidecar's CPU limit; 0 for none. Well above what a renewing elector uses, so that it is never throttled into losing its lease.")
	fs.Var(&memLimit, "memory-limit", "The sidecar's memory limit; 0 for none.")
	fs.StringVar(&o.nativeSidecar, "native-sidecars", "auto",
		"Inject the elector as a native sidecar (an init container with restartPolicy Always): "+
			"true, false, or auto to ask the API server once at start-up (1.29 or later).")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "The kubeconfig file to use. If not set, $KUBECONFIG, then the in-cluster config.")
	fs.StringVar(&o.namespace, "namespace", os.Getenv(election.EnvPodNamespace),
		"The injector's own namespace, for its certificate Secret and leader-election Lease. If not set, $"+election.EnvPodNamespace+".")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "The webhook server's HTTPS port.")
	fs.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "The folder with the webhook server's tls.crt and tls.key.")
	fs.StringVar(&o.certManagement, "cert-management", certsSelf,
		"Who makes the webhook's certificate: "+
			"self (a CA and serving certificate in -cert-secret, rotated before expiry, the CA written into the webhook configuration) "+
			"or external (mounted into -cert-dir by, for example, cert-manager).")
	fs.StringVar(&o.certSecret, "cert-secret", "k8s-elector-injector-cert",
		"With -cert-management=self, the Secret in -namespace holding the CA and serving certificate; mount it at -cert-dir.")
	fs.StringVar(&o.certDNSNames, "cert-dns-names", "",
		"With -cert-management=self, extra comma-separated DNS names for the serving certificate, beside the Service's.")
	fs.StringVar(&o.webhookConfig, "webhook-configuration", "k8s-elector-injector",
		"The MutatingWebhookConfiguration, and the ValidatingWebhookConfiguration of the same name, whose caBundle -cert-management=self fills.")
	fs.StringVar(&o.webhookService, "webhook-service", "k8s-elector-injector", "The webhook's Service in -namespace, named in the serving certificate.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "The address of the metrics endpoint; 0 to disable it.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "The address of /healthz and /readyz.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader among the injector's replicas to run the RBAC reconciler; needed with more than one replica.")
	fs.IntVar(&o.verbosity, "v", 0, "The log verbosity.")
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if o.version {
		return o, nil
	}
	o.settings.Port = int32(port)
	o.settings.LockType = election.LockType(lockType)
	o.settings.AllowedLockTypes = allowed
	o.settings.CPURequest, o.settings.MemoryRequest = cpu.q, mem.q
	o.settings.CPULimit, o.settings.MemoryLimit = cpuLimit.q, memLimit.q
	return o, o.validate(port)
}

// validate names the flag in every error.
func (o *options) validate(port int) error {
	s := o.settings
	switch {
	case s.ElectorImage == "" || strings.ContainsAny(s.ElectorImage, " \t\n"):
		return cli.Usagef("-elector-image: %q must be an image reference without whitespace (example: ghcr.io/vapor-ware/k8s-elector:v1.0.0)", s.ElectorImage)
	case port < 1 || port > 65535:
		return cli.Usagef("-port: %d is not a port number in 1-65535 (example: 4040)", port)
	case o.webhookPort < 1 || o.webhookPort > 65535:
		return cli.Usagef("-webhook-port: %d is not a port number in 1-65535 (example: 9443)", o.webhookPort)
	case o.namespace == "":
		return cli.Usagef("-namespace: not set: set it, or $%s from the downward API (fieldPath: metadata.namespace)", election.EnvPodNamespace)
	case o.nativeSidecar != "auto" && o.nativeSidecar != "true" && o.nativeSidecar != "false":
		return cli.Usagef("-native-sidecars: %q must be auto, true or false", o.nativeSidecar)
	case o.certManagement != certsSelf && o.certManagement != certsExternal:
		return cli.Usagef("-cert-management: %q must be self or external", o.certManagement)
	case o.certManagement == certsSelf && (o.certSecret == "" || o.webhookConfig == "" || o.webhookService == ""):
		return cli.Usagef("-cert-management=self needs -cert-secret, -webhook-configuration and -webhook-service")
	}
	// The settings' own check names the flags.
	if err := s.Validate(); err != nil {
		return cli.Usagef("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// lockTypes is a flag holding a comma-separated list of lock types.
type lockTypes []election.LockType

func (f lockTypes) String() string {
	names := make([]string, len(f))
	for i, t := range f {
		names[i] = string(t)
	}
	return strings.Join(names, ",")
}

func (f *lockTypes) Set(s string) error {
	var types lockTypes
	for name := range strings.SplitSeq(s, ",") {
		t, err := election.ParseLockType(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	*f = types
	return nil
}

// quantity is a flag holding a non-negative resource quantity.
type quantity struct{ q resource.Quantity }

func (f *quantity) String() string { return f.q.String() }

func (f *quantity) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("not a resource quantity (example: 32Mi or 10m)")
	}
	if q.Sign() < 0 {
		return fmt.Errorf("must not be negative")
	}
	f.q = q
	return nil
}

// rotationCheck is how often a self-managed certificate is checked; it is
// renewed 90 days before it expires, so twice a day is plenty.
const rotationCheck = 12 * time.Hour
