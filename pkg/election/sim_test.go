package election

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The simulation runs the real election loop (New, Run, Status) against an
// in-memory API server in synctest bubbles: virtual time, a seeded schedule
// of faults, and the invariant that no two participants of one election
// report is_leader at the same moment. `make test` runs a short one;
// `make simulate` as many schedules as asked.
var (
	simSchedules = flag.Int("sim.schedules", 0, "how many schedules TestSimulate runs (0: a short default, fewer with -short)")
	simBase      = flag.Uint64("sim.base", 1, "the seed of TestSimulate's first schedule; the others follow it")
	simSeed      = flag.String("sim.seed", "", "run only the schedule of this seed, with its trace")
	simVerbose   = flag.Bool("sim.v", false, "print the trace of every schedule run (with the elector's logs)")
	simStep      = flag.Duration("sim.step", 0, "the longest virtual time between two samples of every participant's Status, beside the samples taken whenever anything is delivered or a Status changes (0: a hundredth of the TTL)")
	simKeep      = flag.Bool("sim.keep", false, "write every failing schedule into testdata/sim/, where make test replays it")
	simMaxFail   = flag.Int("sim.maxfail", 3, "stop after this many failing schedules")
)

// TestSimulate runs random schedules of every kind of fault.
func TestSimulate(t *testing.T) {
	n := *simSchedules
	if n == 0 {
		n = simCount(1000, 150)
	}
	simRunFamily(t, simFamilyNamed("random"), n, false)
}

// TestSimSecondPrecision: ConfigMap and Endpoints records keep whole
// seconds. A leader whose renewals fall in the same second as its last one
// changes nothing its followers can see; if it is then cut off, they must
// still not take over before it stops calling itself leader.
func TestSimSecondPrecision(t *testing.T) {
	simRunFamily(t, simFamilyNamed("second-precision"), simCount(200, 50), false)
}

// TestSimDeletedLockFreshJoiner: the lock is deleted while its leader is
// cut off, and a participant that never saw the lock joins. It must not
// create the lock and lead while the old leader may still lead.
func TestSimDeletedLockFreshJoiner(t *testing.T) {
	simRunFamily(t, simFamilyNamed("deleted-lock"), simCount(100, 30), false)
}

// TestSimOneIDTwoProcesses: a second process with the leader's ID must not
// lead while the first still does.
func TestSimOneIDTwoProcesses(t *testing.T) {
	simRunFamily(t, simFamilyNamed("one-id"), simCount(100, 30), false)
}

// TestSimStaleAbsence: a participant that saw the lock missing, then was
// cut off while the lock was made and deleted again, must not make it again
// and lead while the leader of the deleted lock may still lead.
func TestSimStaleAbsence(t *testing.T) {
	simRunFamily(t, simFamilyNamed("stale-absence"), simCount(100, 30), false)
}

// TestSimGarbageTwice: a participant that saw the lock unreadable, missed
// the versions that followed, and sees it unreadable again must not take it
// at once: equal records are not proof that nothing happened in between.
func TestSimGarbageTwice(t *testing.T) {
	simRunFamily(t, simFamilyNamed("garbage-twice"), simCount(100, 30), false)
}

// TestSimCatchesBrokenElector shows that the invariant can fail: electors
// that call themselves leader for three TTLs after their last renewal,
// with their leader cut off for two, must be caught leading two at once.
func TestSimCatchesBrokenElector(t *testing.T) {
	const n = 20
	sum := simRunFamily(t, simFamilyNamed("broken"), n, true)
	if *simSeed == "" && sum.violations < n/2 {
		t.Errorf("the invariant caught %d of %d schedules of a broken elector; want at least %d", sum.violations, n, n/2)
	}
}

// TestSimRegressions replays every schedule kept in testdata/sim/.
func TestSimRegressions(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "sim", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skip("no kept schedules in testdata/sim")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			plan, err := simLoadPlan(f)
			if err != nil {
				t.Fatal(err)
			}
			res := simExecute(t, plan, simOptions{step: *simStep, verbose: *simVerbose})
			if res.violation != "" {
				t.Errorf("%s fails again: %s\nonce: %s\nreplay: go test ./pkg/election -run 'TestSimRegressions/%s$' -sim.v -count=1",
					f, res.violation, plan.Why, name)
			}
		})
	}
}

// TestSimReplayIsExact: a schedule run twice tells the same story, line for
// line and to the nanosecond of virtual time, elector logs and all, so that
// a failing seed replays as it failed. Only the order of the lines of one
// instant may differ: the goroutines that write them run in parallel, in
// the order the Go scheduler picks.
//
// It runs without -race only (make test runs it so): under the race
// detector, which perturbs goroutine scheduling, a replay was seen to differ
// by a simulated network delay, and that source of divergence is not yet
// pinned down.
func TestSimReplayIsExact(t *testing.T) {
	if simRace {
		t.Skip("a replay is exact without -race only; make test runs this test without it")
	}
	for _, seed := range append(simSeq(1, 40), 300327) {
		plan := simRandomPlan(seed)
		first := simExecute(t, plan, simOptions{trace: true})
		second := simExecute(t, plan, simOptions{trace: true})
		if diff := cmp.Diff(simByInstant(first.trace), simByInstant(second.trace)); diff != "" {
			t.Errorf("seed %d (%s) told two stories (-first +second):\n%s", seed, plan, diff)
		}
	}
}

// simSeq is n seeds from first.
func simSeq(first uint64, n int) []uint64 {
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = first + uint64(i)
	}
	return seeds
}

// simByInstant sorts the lines of each instant of a trace.
func simByInstant(trace string) string {
	lines := strings.Split(trace, "\n")
	instant := func(l string) string {
		at, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		return at
	}
	for i := 0; i < len(lines); {
		j := i + 1
		for j < len(lines) && instant(lines[j]) == instant(lines[i]) {
			j++
		}
		slices.Sort(lines[i:j])
		i = j
	}
	return strings.Join(lines, "\n")
}

// TestSimPlansAreDeterministic: a seed always makes the same schedule, and
// a plan survives being written down.
func TestSimPlansAreDeterministic(t *testing.T) {
	for _, fam := range simFamilies {
		for seed := range uint64(50) {
			a, b := fam.make(seed), fam.make(seed)
			if diff := cmp.Diff(simMustJSON(a), simMustJSON(b)); diff != "" {
				t.Fatalf("%s seed %d made two plans (-first +second):\n%s", fam.name, seed, diff)
			}
			var back simPlan
			if err := json.Unmarshal(simMustJSON(a), &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(simMustJSON(a)), string(simMustJSON(&back))); diff != "" {
				t.Fatalf("%s seed %d: the plan changed when read back (-want +got):\n%s", fam.name, seed, diff)
			}
		}
	}
}

// simCount is how many schedules a test runs: fewer with -short, and a
// third under the race detector, which make test uses.
func simCount(n, short int) int {
	switch {
	case testing.Short():
		return short
	case simRace:
		return max(short, n/3)
	}
	return n
}

// simSummary adds up the schedules of one run.
type simSummary struct {
	schedules  int
	violations int
	virtual    time.Duration
	failovers  []float64 // in TTLs
	firsts     []float64 // in TTLs
	noLeader   []uint64  // seeds that ended quiet and without a leader
}

// simRunFamily runs n schedules of fam (or the one of -sim.seed) on every
// CPU, reports each violation with the command that replays it, and logs a
// summary with the failover times.
func simRunFamily(t *testing.T, fam simFamily, n int, expectViolations bool) simSummary {
	seeds := make([]uint64, 0, n)
	verbose := *simVerbose
	if *simSeed != "" {
		s, err := strconv.ParseUint(*simSeed, 10, 64)
		if err != nil {
			t.Fatalf("-sim.seed=%q: %v", *simSeed, err)
		}
		seeds = append(seeds, s)
	} else {
		base := uint64(1)
		if fam.name == "random" {
			base = *simBase
		}
		for i := range uint64(n) {
			seeds = append(seeds, base+i)
		}
	}
	opts := simOptions{step: *simStep, verbose: verbose}

	var (
		mu      sync.Mutex
		sum     simSummary
		next    atomic.Int64
		failed  atomic.Int64
		started = time.Now()
	)
	record := func(t *testing.T, res simResult) {
		mu.Lock()
		defer mu.Unlock()
		sum.schedules++
		sum.virtual += res.virtual
		ttl := res.plan.TTL.D().Seconds()
		for _, f := range res.failovers {
			sum.failovers = append(sum.failovers, f.Seconds()/ttl)
		}
		if res.first >= 0 {
			sum.firsts = append(sum.firsts, res.first.Seconds()/ttl)
		}
		if res.quietEnd && !res.leaderEnd && res.violation == "" {
			sum.noLeader = append(sum.noLeader, res.plan.Seed)
		}
		if res.violation == "" {
			return
		}
		sum.violations++
		if expectViolations {
			if verbose {
				t.Logf("seed %d (%s): caught, as it must be: %s", res.plan.Seed, res.plan, res.violation)
			}
			return
		}
		if failed.Add(1) > int64(*simMaxFail) {
			return
		}
		kept := ""
		if *simKeep {
			kept = "\nkept as " + simKeepPlan(t, res.plan, res.violation)
		}
		t.Errorf("seed %d (%s): %s\nreplay: go test ./pkg/election -run '^%s$' -sim.seed=%d -count=1%s",
			res.plan.Seed, res.plan, res.violation, fam.test, res.plan.Seed, kept)
	}

	t.Run("schedules", func(t *testing.T) {
		workers := min(runtime.GOMAXPROCS(0), len(seeds))
		for i := range workers {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				for {
					k := int(next.Add(1)) - 1
					if k >= len(seeds) || (!expectViolations && failed.Load() >= int64(*simMaxFail)) {
						return
					}
					plan := fam.make(seeds[k])
					res := simExecute(t, plan, opts)
					record(t, res)
				}
			})
		}
	})

	wall := time.Since(started)
	t.Logf("%s: %d schedules (seeds %d to %d; %s of virtual time) in %s; %d failed (two leaders at once, or none for too long)",
		fam.name, sum.schedules, seeds[0], seeds[len(seeds)-1], sum.virtual.Round(time.Second), wall.Round(time.Millisecond), sum.violations)
	t.Logf("%s: first leader after %s TTL; failovers (last leader gone to next leader): %s TTL",
		fam.name, simQuantiles(sum.firsts), simQuantiles(sum.failovers))
	if len(sum.noLeader) > 0 {
		slices.Sort(sum.noLeader)
		t.Logf("%s: %d schedules ended with no leader for 3 TTLs, and no action of the plan in them, seeds %v",
			fam.name, len(sum.noLeader), sum.noLeader[:min(10, len(sum.noLeader))])
	}
	return sum
}

// simQuantiles describes a sample: n, median, 90th and 99th percentile,
// max.
func simQuantiles(xs []float64) string {
	if len(xs) == 0 {
		return "none"
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	q := func(p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))] }
	return fmt.Sprintf("n=%d p50=%.2f p90=%.2f p99=%.2f max=%.2f", len(xs), q(0.5), q(0.9), q(0.99), xs[len(xs)-1])
}

// simKeepPlan writes a failing plan into testdata/sim/ and returns its
// path.
func simKeepPlan(t *testing.T, plan *simPlan, why string) string {
	kept := *plan
	kept.Why, _, _ = strings.Cut(why, "\n")
	dir := filepath.Join("testdata", "sim")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Error(err)
		return ""
	}
	b, err := json.MarshalIndent(&kept, "", "  ")
	if err != nil {
		t.Error(err)
		return ""
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.json", plan.Family, plan.Seed))
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Error(err)
		return ""
	}
	return path
}
