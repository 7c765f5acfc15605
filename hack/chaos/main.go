// Command chaos runs several elections of real elector processes on the
// local control plane and injects faults on a random schedule: crashes,
// graceful stops and freezes of participants, participants and everyone
// cut off from the API server, the API server frozen and restarted, the
// lock deleted or garbled by an admin, fresh joiners with and without the
// watch right. A checker polls every participant's GET / every few
// milliseconds and fails the run if two participants of one election ever
// say is_leader=true at the same moment. It prints a table of the faults,
// their failover times against the elector's bounds, and the load on the
// API server. Run it with `make chaos`.
//
// The seed fixes the topology and the sequence of choices (which fault,
// which election, how long); who leads when a fault strikes is up to the
// run, so a replay repeats the schedule, not every interleaving.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

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
	flag.IntVar(&o.elections, "elections", 4, "how many elections run at once, half on Leases and half on ConfigMaps")
	flag.IntVar(&o.maxSize, "max-participants", 3, "the most participants an election starts with (at least 2; up to one more joins)")
	flag.DurationVar(&o.pollPeriod, "poll", 2*time.Millisecond, "how often the checker asks each participant GET /, at most")
	flag.DurationVar(&o.answerTimeout, "answer-timeout", 5*time.Second, "how long a running participant may take to answer GET / before it is reported")
	flag.DurationVar(&o.slack, "slack", 3*time.Second, "time added to each fault's measurement window for a loaded machine (never to a bound)")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs of the participants and the API server even when the run passes")
	flag.Parse()
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano()) % 1e9
	}
	if o.elections < 1 || o.maxSize < 2 || o.duration <= 0 || o.pollPeriod <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: -elections must be at least 1, -max-participants at least 2, -duration and -poll positive")
		os.Exit(2)
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
	return fmt.Sprintf("go run ./hack/chaos -elector=%s -duration=%s -elections=%d -max-participants=%d -poll=%s -seed=%d",
		o.bin, o.duration, o.elections, o.maxSize, o.pollPeriod, o.seed)
}

// topology draws the elections from rng: lock types alternate, ttls are
// whole seconds from 2 to 10, sizes from 2 to maxSize.
func topology(rng *rand.Rand, n, maxSize int) []electionSpec {
	var specs []electionSpec
	for i := range n {
		lock := election.LockLeases
		if i%2 == 1 {
			lock = election.LockConfigMaps
		}
		specs = append(specs, electionSpec{
			name:      fmt.Sprintf("e%d", i),
			namespace: fmt.Sprintf("chaos-e%d", i),
			lock:      lock,
			ttl:       time.Duration(2+rng.IntN(9)) * time.Second,
			size:      2 + rng.IntN(maxSize-1),
		})
	}
	return specs
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
	cp, err := startControlPlane(o.assets, logDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.RemoveAll(logDir)
		return 1
	}
	failed := true
	defer func() {
		if err := cp.Stop(); err != nil {
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
		bin: bin, logDir: logDir, cp: cp, slack: o.slack, faults: map[string]int{},
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
	h.schedule(schedCtx, start.Add(o.duration), rng)
	h.running.Wait()
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
