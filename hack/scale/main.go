// Command scale measures what many elections cost one local control plane.
// For each size (elections × participants) it starts a fresh etcd and
// kube-apiserver, gives each election a service account with the Role the
// injector would grant it and the lock policy of config/policy, runs every
// participant as a real elector process (bin/elector, default timings, its
// own -http port), and prints one row per size:
//
//   - the time from the first process started until every election has
//     exactly one participant whose GET / says is_leader=true, and the
//     median election's time. An elector that makes its lock leads only a
//     ttl later, so neither is under the ttl (10 s by default);
//   - API writes and reads per second at steady state, from kube-apiserver's
//     apiserver_request_total, beside the idle control plane's before the
//     electors started;
//   - kube-apiserver's and etcd's CPU (seconds per second, from
//     /proc/PID/stat) at steady state and idle, and the electors' total;
//   - the electors' total and per-process resident memory (VmRSS).
//
// It needs the control plane and the elector built (`make envtest build`)
// and KUBEBUILDER_ASSETS pointing at bin/k8s. It is heavy: on a shared
// machine run it alone, for example
//
//	flock /tmp/k8s-elector-heavy.lock go run ./hack/scale -sizes=10x3,100x3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

func main() {
	var o options
	sizes := flag.String("sizes", "10x3,30x3,100x3,30x10", "the sizes to measure, ELECTIONSxPARTICIPANTS, comma-separated")
	lock := flag.String("lock", "mixed", "the lock type of the elections: leases, configmaps, or mixed (every other election on each)")
	flag.StringVar(&o.elector, "elector", "bin/elector", "the elector binary (built with `make build`)")
	flag.StringVar(&o.policy, "policy", "config/policy/lock.yaml",
		"the lock ValidatingAdmissionPolicy to install, which kube-apiserver evaluates on every renewal; empty for none")
	flag.StringVar(&o.logs, "logs", "", "a directory to keep each elector's log in, at -v=1; empty to keep none")
	flag.DurationVar(&o.idle, "idle", 20*time.Second, "how long to measure the idle control plane before the electors start")
	flag.DurationVar(&o.settle, "settle", 10*time.Second, "how long to wait after every election has a leader before measuring")
	flag.DurationVar(&o.window, "window", 60*time.Second, "how long to measure at steady state")
	flag.DurationVar(&o.electTimeout, "elect-timeout", 5*time.Minute, "how long every election may take to elect before the run fails")
	flag.Parse()

	var err error
	if o.sizes, err = parseSizes(*sizes); err == nil {
		o.locks, err = parseLockMix(*lock)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	// envtest logs through controller-runtime; its start-up chatter is not
	// the measurement.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command line, parsed.
type options struct {
	sizes        []size
	locks        lockMix
	elector      string
	policy       string
	logs         string
	idle         time.Duration
	settle       time.Duration
	window       time.Duration
	electTimeout time.Duration
}

// run measures every size, each on a control plane of its own, and prints
// the table.
func run(ctx context.Context, o options) error {
	if _, err := os.Stat(o.elector); err != nil {
		return fmt.Errorf("no elector binary at %s: run `make build`, or set -elector", o.elector)
	}
	var results []result
	for _, sz := range o.sizes {
		fmt.Fprintf(os.Stderr, "scale: %s\n", sz)
		r, err := measure(ctx, o, sz)
		if err != nil {
			return fmt.Errorf("%s: %w", sz, err)
		}
		results = append(results, r)
	}
	fmt.Printf("%d-core machine; elector default timings (ttl %s); locks: %s; lock policy: %s\n\n",
		runtime.NumCPU(), election.DefaultTTL, o.locks, orNone(o.policy))
	return render(os.Stdout, results)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
