// Command chaos runs several elections of real elector processes on the
// local control plane and injects faults on a random schedule: crashes,
// graceful stops and freezes of participants, participants and everyone
// cut off from the API server, the API server frozen and restarted, the
// lock deleted or garbled by an admin, fresh joiners with and without the
// watch right. A checker polls every participant's GET / every few
// milliseconds and fails the run if two participants of one election ever
// say is_leader=true at the same moment. The electors of Lease elections
// also keep a Service's endpoints (-leader-service), and every version of
// its EndpointSlice is checked against the lock (see internal/routing):
// never two addresses, none of a participant not holding the lock, and
// the leader's gone before it releases. It prints a table of the faults,
// their failover times against the elector's bounds, and the load on the
// API server. Run it with `make chaos`.
//
// The schedule deals the fault kinds in rounds, each a shuffled deck with
// every kind once, so a run of n rounds injects every kind n times (see
// schedule). The seed fixes the topology and the sequence of choices (the
// order of each deck, which election, how long); who leads when a fault
// strikes is up to the run, so a replay repeats the schedule, not every
// interleaving.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/routing"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// options are the command line.
type options struct {
	bin           string
	assets        string
	duration      time.Duration
	seed          uint64
	elections     int
	maxSize       int
	minPerKind    int
	pollPeriod    time.Duration
	answerTimeout time.Duration
	slack         time.Duration
	keep          bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "elector", "bin/elector", "the elector binary (build it with `make build`)")
	flag.StringVar(&o.assets, "assets", envOr("KUBEBUILDER_ASSETS", "bin/k8s"), "the folder with etcd and kube-apiserver (`make envtest` builds them)")
	flag.DurationVar(&o.duration, "duration", 2*time.Minute, "how long to inject faults; the run then waits out the last fault's measurement")
	flag.Uint64Var(&o.seed, "seed", 0, "the seed of the topology and the fault schedule (0: from the clock)")
	// Four elections cover the ranges with some 25 participants, about as
	// many as the checker polls every 2 ms on a 2-core machine.
	flag.IntVar(&o.elections, "elections", 4, "how many elections run at once, on Leases, ConfigMaps and Endpoints in turn")
	flag.IntVar(&o.maxSize, "max-participants", 10, "the most participants an election starts with: the sizes are spread from 2 to this")
	flag.IntVar(&o.minPerKind, "min-per-kind", 0,
		"inject every fault kind at least this often, going on past -duration (by at most a quarter of it) until done (0: 20 per 30 minutes of -duration)")
	flag.DurationVar(&o.pollPeriod, "poll", 2*time.Millisecond, "how often the checker asks each participant GET /, at most")
	flag.DurationVar(&o.answerTimeout, "answer-timeout", 5*time.Second, "how long a running participant may take to answer GET / before it is reported")
	flag.DurationVar(&o.slack, "slack", 3*time.Second, "time added to each fault's measurement window for a loaded machine (never to a bound)")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs of the participants and the API server even when the run passes")
	flag.Parse()
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano()) % 1e9
	}
	if o.elections < 1 || o.maxSize < 2 || o.duration <= 0 || o.pollPeriod <= 0 || o.minPerKind < 0 {
		fmt.Fprintln(os.Stderr, "chaos: -elections must be at least 1, -max-participants at least 2, -duration and -poll positive, -min-per-kind not negative")
		os.Exit(2)
	}
	if o.minPerKind == 0 {
		o.minPerKind = max(1, int(20*o.duration/(30*time.Minute)))
	}
	os.Exit(run(o))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// replay is the command line that repeats this run's schedule.
func (o options) replay() string {
	return fmt.Sprintf("go run ./hack/chaos -elector=%s -duration=%s -elections=%d -max-participants=%d -min-per-kind=%d -poll=%s -seed=%d",
		o.bin, o.duration, o.elections, o.maxSize, o.minPerKind, o.pollPeriod, o.seed)
}

// The range of ttls the topology spreads over: the elector's least and its
// default.
const (
	minTTL = 2 * time.Second
	maxTTL = 10 * time.Second
)

// topology makes n elections: lock types in turn (Leases, ConfigMaps,
// Endpoints), ttls spread evenly from minTTL to maxTTL and sizes from 2 to
// maxSize, both ends included, each dealt to the elections in an order
// drawn from rng. Ttls are whole seconds, as the lease stores them.
func topology(rng *rand.Rand, n, maxSize int) []electionSpec {
	ttls, sizes := rng.Perm(n), rng.Perm(n)
	var specs []electionSpec
	for i := range n {
		specs = append(specs, electionSpec{
			name:      fmt.Sprintf("e%d", i),
			namespace: fmt.Sprintf("chaos-e%d", i),
			lock:      election.LockTypes[i%len(election.LockTypes)],
			ttl:       minTTL + spread(ttls[i], n, (maxTTL-minTTL)/time.Second)*time.Second,
			size:      2 + int(spread(sizes[i], n, time.Duration(maxSize-2))),
		})
	}
	return specs
}

// spread is the i-th of n points spread evenly over [0, span], rounded to
// the nearest whole unit.
func spread(i, n int, span time.Duration) time.Duration {
	if n == 1 {
		return 0
	}
	return (span*time.Duration(2*i) + time.Duration(n-1)) / time.Duration(2*(n-1))
}

// cluster is the control plane as the harness uses it.
type cluster struct {
	env *controlplane.Env
	// cfg and admin are the admin's, with a short timeout: the faults
	// freeze the API server, and no admin call may hang for long.
	cfg   *rest.Config
	admin kubernetes.Interface
	host  string // the API server's host:port, which the relays forward to
}

// startCluster starts etcd and kube-apiserver; the processes the faults
// start again write their logs in logDir.
func startCluster(logDir string) (*cluster, error) {
	env, err := controlplane.Start(controlplane.Options{LogDir: logDir})
	if err != nil {
		return nil, err
	}
	c := &cluster{env: env, cfg: rest.CopyConfig(env.Config)}
	c.cfg.Timeout = 5 * time.Second
	// The Endpoints locks draw a deprecation warning on every admin call.
	c.cfg.WarningHandler = rest.NoWarnings{}
	u, err := url.Parse(c.cfg.Host)
	if err == nil {
		c.host = u.Host
		c.admin, err = kubernetes.NewForConfig(c.cfg)
	}
	if err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	return c, nil
}

func run(o options) int {
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	fmt.Printf("chaos: seed %d\n", o.seed)
	ctrllog.SetLogger(funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, "chaos: envtest:", prefix, args)
	}, funcr.Options{}))
	if _, err := os.Stat(o.bin); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: no elector binary %s: build it with `make build`\n", o.bin)
		return 2
	}
	bin, _ := filepath.Abs(o.bin)
	logDir, err := os.MkdirTemp("", "elector-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	// Every loop below ends by this deadline at the latest, or on Ctrl-C.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelRun := context.WithTimeout(ctx, o.duration+5*time.Minute)
	defer cancelRun()

	fmt.Fprintln(os.Stderr, "chaos: starting etcd and kube-apiserver")
	if err := os.Setenv(controlplane.AssetsEnv, o.assets); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 1
	}
	cp, err := startCluster(logDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.RemoveAll(logDir)
		return 1
	}
	failed := true
	defer func() {
		if err := cp.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: stop control plane:", err)
		}
		if failed || o.keep {
			fmt.Printf("logs: %s\n", logDir)
		} else {
			os.RemoveAll(logDir)
		}
	}()

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	h := &harness{
		bin: bin, logDir: logDir, cp: cp, slack: o.slack, faults: map[string]int{}, variants: map[string]int{},
		chk: &checker{ctx: pollCtx, pollPeriod: o.pollPeriod, answerTimeout: o.answerTimeout},
	}
	defer func() {
		for _, p := range h.all {
			p.kill()
		}
	}()
	for _, spec := range topology(rng, o.elections, o.maxSize) {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		es, err := setupElection(sctx, cp, spec)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			return 1
		}
		if es.routed() {
			// The env's client, without the admin's short timeout: the
			// watch runs all along, and resumes after API-server faults.
			if es.routes, err = routing.Watch(ctx, cp.env.Client, es.namespace, es.name, es.name); err != nil {
				fmt.Fprintln(os.Stderr, "chaos:", err)
				return 1
			}
			defer es.routes.Close()
		}
		h.elections = append(h.elections, es)
		for range spec.size {
			if _, err := h.join(ctx, es, rng.IntN(4) == 0); err != nil {
				fmt.Fprintln(os.Stderr, "chaos:", err)
				return 1
			}
		}
	}
	for _, es := range h.elections {
		deadline := time.Now().Add(3*es.ttl + 20*time.Second)
		for es.leader() == nil && time.Now().Before(deadline) && ctx.Err() == nil {
			sleep(ctx, 20*time.Millisecond)
		}
		if es.leader() == nil {
			fmt.Fprintf(os.Stderr, "chaos: election %s has no leader %s after its start\n", es.name, 3*es.ttl+20*time.Second)
			return 1
		}
	}

	fmt.Fprintf(os.Stderr, "chaos: injecting faults for %s\n", o.duration)
	if err := h.counter.scrape(ctx, cp.admin); err != nil {
		fmt.Fprintln(os.Stderr, "chaos: read /metrics:", err)
		return 1
	}
	start := time.Now()
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for ctx.Err() == nil && pollCtx.Err() == nil {
			sleep(pollCtx, 5*time.Second)
			_ = h.counter.scrape(ctx, cp.admin)
		}
	}()
	schedCtx, abort := context.WithCancel(ctx)
	defer abort()
	h.abort = abort
	h.schedule(schedCtx, start.Add(o.duration), start.Add(o.duration+o.duration/4), o.minPerKind, rng)
	_ = h.counter.scrape(ctx, cp.admin)
	elapsed := time.Since(start)
	stopPolling()
	h.chk.wg.Wait()
	<-scraped
	for _, p := range h.all {
		p.kill()
	}

	var found, early []violation
	for _, es := range h.elections {
		for _, v := range violations(es) {
			if v.overlap {
				found = append(found, v)
			} else {
				early = append(early, v)
			}
		}
	}
	h.print(os.Stdout, o, elapsed, len(found), len(early))
	problems := append(append([]string(nil), h.errs...), h.chk.problems...)
	problems = append(problems, h.checkRoutes(os.Stdout)...)
	for _, kind := range h.short(o.minPerKind) {
		problems = append(problems, fmt.Sprintf("%s injected %d times, fewer than -min-per-kind=%d", kind, h.faults[kind], o.minPerKind))
	}
	if ctx.Err() != nil {
		problems = append(problems, "the run was interrupted: "+context.Cause(ctx).Error())
	}
	if len(found) > 0 || len(early) > 0 || len(problems) > 0 {
		for i, f := range found {
			if i == 20 {
				fmt.Printf("... and %d more overlaps\n", len(found)-20)
				break
			}
			fmt.Println("OVERLAP:", f)
		}
		for i, v := range early {
			if i == 20 {
				fmt.Printf("... and %d more leaders too soon\n", len(early)-20)
				break
			}
			fmt.Println("TOO SOON:", v)
		}
		for _, p := range problems {
			fmt.Println("PROBLEM:", strings.TrimRight(p, "\n"))
		}
		fmt.Printf("FAIL: %d overlaps, %d leaders too soon, %d problems; seed %d\nreplay: %s\n", len(found), len(early), len(problems), o.seed, o.replay())
		return 1
	}
	failed = false
	fmt.Printf("PASS: seed %d\n", o.seed)
	return 0
}
