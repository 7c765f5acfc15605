// Command elector joins a leader election on a Kubernetes lock object and
// reports its state over HTTP. It is a drop-in replacement for upstream
// k8s-elector: the same flags and the same GET / document.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/vapor-ware/k8s-elector/internal/cli"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// serviceAccountNamespace is where a pod finds its own namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	setGCPercent(os.LookupEnv)
	os.Exit(run(os.Args[1:], os.Stderr))
}

// gcPercent is the elector's GOGC unless $GOGC sets one. The elector's live
// heap is a few hundred kilobytes, but the runtime lets the heap grow to
// 4 MiB x GOGC/100 before it collects, whatever the live heap, and keeps
// those pages for a while after a burst of requests. GET / allocates
// nothing of its own, so collecting more often costs little even under a
// flood of it: bench/ measured 25 against 50 side by side at the same
// GET / throughput, with 1.1 MiB less RSS at steady state and 0.4 MiB less
// right after the load.
const gcPercent = 25

// setGCPercent applies gcPercent unless the environment sets GOGC.
func setGCPercent(lookupEnv func(string) (string, bool)) {
	if _, ok := lookupEnv("GOGC"); !ok {
		debug.SetGCPercent(gcPercent)
	}
}

func run(args []string, stderr io.Writer) int {
	opts, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return cli.Fail(stderr, "elector", err)
	}
	if opts.version {
		fmt.Fprintln(stderr, "elector", version)
		return 0
	}
	if err := opts.run(stderr); err != nil {
		return cli.Fail(stderr, "elector", err)
	}
	return 0
}

type options struct {
	cfg        election.Config
	httpAddr   string
	kubeconfig string
	logFormat  string
	verbosity  int
	version    bool
}

// parse reads the command line, then ELECTOR_* variables for the flags the
// command line left unset, then fills the pod-aware defaults.
func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	var lockType string
	fs := flag.NewFlagSet("elector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cfg.Election, election.FlagElection, "", "The name of the election. This is required.")
	fs.StringVar(&o.httpAddr, election.FlagHTTP, "", "The HTTP address (host:port) which leader state will be reported on.")
	fs.StringVar(&o.cfg.ID, election.FlagID, "",
		"The ID of the election participant. If not set, $"+election.EnvPodName+" is used, then the hostname, as reported by the kernel.")
	fs.StringVar(&o.kubeconfig, election.FlagKubeconfig, "", "The kubeconfig file to use. If not set, in-cluster config will be used.")
	fs.StringVar(&lockType, election.FlagLockType, string(election.LockLeases),
		"The type of Kubernetes object to use for the lock (leases, endpoints, configmaps)")
	fs.StringVar(&o.cfg.Namespace, election.FlagNamespace, "default",
		"The Kubernetes namespace to run the election in. If not set, $"+election.EnvPodNamespace+
			" is used, then the pod's own namespace when in a cluster, then the default namespace.")
	fs.DurationVar(&o.cfg.TTL, election.FlagTTL, election.DefaultTTL, "The TTL for the election: a whole number of seconds, at least 2s.")
	fs.DurationVar(&o.cfg.RenewDeadline, election.FlagRenewDeadline, 0,
		"How long a leader keeps leading without a successful renewal. If not set, ttl/3, and at least 1.5s.")
	fs.DurationVar(&o.cfg.RetryPeriod, election.FlagRetryPeriod, 0, "How often a leader renews its lease. If not set, ttl/6.")
	fs.StringVar(&o.cfg.PodLabel, election.FlagPodLabel, "",
		"If set, a label key the elector keeps on its own pod as <key>=leader or <key>=standby, so a Service can select the leader.")
	fs.StringVar(&o.cfg.PodName, election.FlagPodName, "",
		"The pod to label with -pod-label. If not set, $"+election.EnvPodName+" is used. "+
			"Given as $"+upstreamPodNameEnv+", as upstream k8s-elector took it, it also sets -pod-label="+upstreamPodLabel+" unless -pod-label is given.")
	fs.BoolVar(&o.cfg.PodDeletionCost, election.FlagPodDeletionCost, false,
		"Keep the leader's pod annotated "+election.AnnotationPodDeletionCost+"="+election.LeaderDeletionCost+
			", so that a Deployment's rollout deletes it after the other old pods, once new pods can take over: "+
			"one handover per rollout with maxUnavailable above 0. "+
			"Needs the pod's name, as -pod-label does, and pods patch; the injector's policy grants it to -pod-deletion-cost=true, spelled so.")
	fs.BoolVar(&o.cfg.PreferNewest, election.FlagPreferNewest, true,
		"Keep the newest participant named as the successor on the lock, and leave a released lock to it first, "+
			"so that a rolling update hands over once, to a new pod. Set it to false to have every follower race for a released lock.")
	fs.DurationVar(&o.cfg.ReturnWait, election.FlagReturnWait, 0,
		"If set, how long the others leave the lock to this participant after it releases it on shutdown, "+
			"for it to come back under the same -id, as a StatefulSet's pod does: one handover per StatefulSet rollout, after a gap of the pod's restart. "+
			"At most -ttl. If not set, a leader that shuts down hands over at once.")
	fs.StringVar(&o.cfg.AppHealthURL, election.FlagAppHealthURL, "",
		"If set, the application's health endpoint (example: http://localhost:8080/healthz). "+
			"A participant whose application does not answer it with 2xx or 3xx does not take the lock, "+
			"and a leader whose application fails it releases the lock to a healthy follower.")
	fs.DurationVar(&o.cfg.AppHealthPeriod, election.FlagAppHealthPeriod, election.DefaultAppHealthPeriod,
		"How often -app-health-url is probed, and how long a probe may take; at least "+election.MinAppHealthPeriod.String()+".")
	fs.IntVar(&o.cfg.AppHealthThreshold, election.FlagAppHealthThreshold, election.DefaultAppHealthThreshold,
		"How many failed probes of -app-health-url in a row make the application unhealthy. One healthy answer makes it healthy again.")
	fs.StringVar(&o.cfg.LeaderService, election.FlagLeaderService, "",
		"If set, a Service of the namespace, with no selector and annotated "+election.AnnotationElection+"=<election>, "+
			"whose endpoints the elector keeps: the leader's pod alone, at -pod-ip, and none during a handover. "+
			"The leader removes its address before it releases the lock, so the Service never sends to two pods.")
	fs.StringVar(&o.cfg.PodIP, election.FlagPodIP, "",
		"The pod's IP, which -leader-service lists. If not set, $"+election.EnvPodIP+" is used (from the downward API: status.podIP).")
	fs.StringVar(&o.cfg.NotifyURL, election.FlagNotifyURL, "",
		"If set, a URL (example: http://localhost:8080/elector) the elector POSTs its GET / document to, as JSON, "+
			"at start and on every change of is_leader, leader or epoch: for an application that cannot hold /watch open. "+
			"A failed delivery is retried with backoff, with the newest document.")
	fs.StringVar(&o.logFormat, election.FlagLogFormat, "text", "The log format: text or json.")
	fs.IntVar(&o.verbosity, election.FlagVerbosity, 0,
		"The log verbosity: 0 logs changes of leadership, 1 adds failed requests, 4 and up adds client-go's detail.")
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	// Registered after the others, so -h can leave them out.
	shown := flag.NewFlagSet("elector", flag.ContinueOnError)
	fs.VisitAll(func(f *flag.Flag) { shown.Var(f.Value, f.Name, f.Usage) })
	klogNames := addKlogFlags(fs)
	fs.Usage = func() {
		shown.SetOutput(fs.Output())
		fmt.Fprintf(fs.Output(), "Usage of elector:\n")
		shown.PrintDefaults()
		fmt.Fprintf(fs.Output(),
			"\nEvery flag can also be set with an environment variable %s<FLAG>, for example %sELECTION or %sLOCK_TYPE; a flag on the command line wins.\n",
			election.EnvPrefix, election.EnvPrefix, election.EnvPrefix)
		fmt.Fprintf(fs.Output(), "Upstream k8s-elector's klog flags (-%s) are accepted and ignored.\n", strings.Join(klogNames, ", -"))
	}
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := election.EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[f.Name] && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = cli.Usagef("%s: %q: %v", env, v, err)
			}
			set[f.Name] = true
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if ignored := setKlogFlags(fs, klogNames); len(ignored) > 0 {
		fmt.Fprintf(stderr, "elector: ignoring klog flags %s: the elector logs to stderr, set by -%s and -%s\n",
			strings.Join(ignored, " "), election.FlagVerbosity, election.FlagLogFormat)
	}
	if _, ok := os.LookupEnv(upstreamPodNameEnv); ok && !set[election.FlagPodLabel] {
		// Upstream k8s-elector labelled its pod whenever it was given the
		// pod's name this way, and Services may select on that label.
		o.cfg.PodLabel = upstreamPodLabel
	}
	if o.version {
		return o, nil
	}

	o.cfg.LockType = election.LockType(lockType)
	if o.cfg.ID == "" {
		o.cfg.ID = os.Getenv(election.EnvPodName)
	}
	if o.cfg.ID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, cli.Usagef("-%s: not set, and the hostname cannot be read: %v", election.FlagID, err)
		}
		o.cfg.ID = host
	}
	if !set[election.FlagNamespace] {
		o.cfg.Namespace = defaultNamespace()
	}
	if o.cfg.PodName == "" {
		o.cfg.PodName = os.Getenv(election.EnvPodName)
	}
	if o.cfg.PodIP == "" {
		o.cfg.PodIP = os.Getenv(election.EnvPodIP)
	}
	renew, retry := election.DefaultTimings(o.cfg.TTL)
	if o.cfg.RenewDeadline == 0 {
		o.cfg.RenewDeadline = renew
	}
	if o.cfg.RetryPeriod == 0 {
		o.cfg.RetryPeriod = retry
	}
	return o, o.validate()
}

// validate checks the options, naming the flag in every error: the
// election's settings as Config.Validate does (its errors name the flags),
// and what only the command line has.
func (o *options) validate() error {
	// Config reads a zero period or threshold as its default; on the
	// command line, which shows the defaults, 0 is a value, and a wrong one.
	if o.cfg.AppHealthPeriod < election.MinAppHealthPeriod {
		return cli.Usagef("-%s: %s is under the minimum %s (example: %s)",
			election.FlagAppHealthPeriod, o.cfg.AppHealthPeriod, election.MinAppHealthPeriod, election.DefaultAppHealthPeriod)
	}
	if o.cfg.AppHealthThreshold < 1 {
		return cli.Usagef("-%s: %d must be at least 1 (example: %d)",
			election.FlagAppHealthThreshold, o.cfg.AppHealthThreshold, election.DefaultAppHealthThreshold)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return cli.Usagef("-%s: %q is not a log format (valid: text, json)", election.FlagLogFormat, o.logFormat)
	}
	if err := o.cfg.Validate(); err != nil {
		return cli.Usage(err)
	}
	return nil
}

// Upstream k8s-elector labels its pod upstreamPodLabel=leader|standby when
// upstreamPodNameEnv names the pod; -pod-name reads the same variable.
const (
	upstreamPodNameEnv = election.EnvPrefix + "POD_NAME"
	upstreamPodLabel   = "k8s-elector/status"
)

// klogFlags are the logging flags upstream k8s-elector registered from klog
// v1, with their kind. Manifests written for it pass them, so they are
// accepted: -v maps to the elector's own -v, the others only change where
// and how klog wrote its files, and are ignored with one warning.
var klogFlags = map[string]bool{ // name -> is a boolean flag
	"logtostderr":       true,
	"alsologtostderr":   true,
	"skip_headers":      true,
	"skip_log_headers":  true,
	"add_dir_header":    true,
	"one_output":        true,
	"stderrthreshold":   false,
	"log_dir":           false,
	"log_file":          false,
	"log_file_max_size": false,
	"vmodule":           false,
	"log_backtrace_at":  false,
}

// addKlogFlags registers klogFlags on fs.
func addKlogFlags(fs *flag.FlagSet) []string {
	names := slices.Sorted(maps.Keys(klogFlags))
	for _, name := range names {
		if klogFlags[name] {
			fs.Bool(name, false, "Accepted for upstream k8s-elector's command lines, and ignored.")
		} else {
			fs.String(name, "", "Accepted for upstream k8s-elector's command lines, and ignored.")
		}
	}
	return names
}

// setKlogFlags lists the klog flags given on the command line.
func setKlogFlags(fs *flag.FlagSet, names []string) []string {
	var given []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(names, f.Name) {
			given = append(given, "-"+f.Name)
		}
	})
	return given
}

// defaultNamespace is $POD_NAMESPACE, then the pod's own namespace, then
// "default".
func defaultNamespace() string {
	if ns := os.Getenv(election.EnvPodNamespace); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return "default"
}

// restConfig loads -kubeconfig, or the in-cluster configuration without it.
func (o *options) restConfig() (*rest.Config, error) {
	if o.kubeconfig != "" {
		if _, err := os.Stat(o.kubeconfig); err != nil {
			return nil, cli.Usagef("-%s: %v", election.FlagKubeconfig, err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, cli.Usagef("-%s: %q is not a usable kubeconfig: %v", election.FlagKubeconfig, o.kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, cli.Usagef("-%s: not set, and not running in a cluster: give a kubeconfig (example: -%s=$HOME/.kube/config)",
			election.FlagKubeconfig, election.FlagKubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster configuration: %w", err)
	}
	return cfg, nil
}

func (o *options) logger(stderr io.Writer) logr.Logger {
	handlerOpts := &slog.HandlerOptions{Level: slog.Level(-o.verbosity)}
	var h slog.Handler = slog.NewTextHandler(stderr, handlerOpts)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, handlerOpts)
	}
	return logr.FromSlogHandler(h)
}

func (o *options) run(stderr io.Writer) error {
	log := o.logger(stderr)
	klog.SetLogger(log.WithName("client-go"))

	restCfg, err := o.restConfig()
	if err != nil {
		return err
	}
	var server *election.Server
	metrics := election.NewMetrics()
	clients, err := election.NewClients(restCfg, o.cfg.RenewDeadline)
	if err != nil {
		return err
	}
	elector, err := election.New(o.cfg, clients, log, metrics)
	if err != nil {
		return cli.Usage(err)
	}
	if o.httpAddr != "" {
		l, err := election.Listen(o.httpAddr)
		if err != nil {
			return cli.Usagef("-%s: %v", election.FlagHTTP, err)
		}
		server = election.NewServer(elector, metrics)
		go func() {
			if err := server.Serve(l); err != nil {
				log.Error(err, "HTTP server stopped")
			}
		}()
		log.Info("serving leader state", "address", l.Addr().String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-signals
		log.Info("shutting down; a second signal exits at once", "signal", sig.String())
		cancel()
		<-signals
		os.Exit(cli.ExitError)
	}()

	err = elector.Run(ctx)
	if server != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = server.Shutdown(sctx)
		scancel()
	}
	return err
}
