// Command bench measures the elector on the local control plane and prints
// each figure beside its goal: handover and failover times, the load an
// election puts on the API server, memory and binary size, and the speed of
// GET /. Run it with `make bench`.
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

func main() {
	bin := flag.String("elector", "bin/elector", "the elector binary to measure (built stripped, as the images build it)")
	baseline := flag.String("baseline", "",
		"an earlier elector binary, built the same way: its memory and GET / figures are measured in the same run, alternating with -elector's, "+
			"and printed beside them")
	footprint := flag.Bool("footprint", false, "measure only memory and GET /, not handovers, failovers or API requests")
	handovers := flag.Int("handovers", 100, "graceful handovers to time, among handoverParticipants participants")
	failovers := flag.Int("failovers", 3, "crash failovers to time")
	probe := flag.String("probe", probeWatch,
		"how a handover's new leader is seen: watch (its GET /watch stream, confirmed by GET /) "+
			"or poll (GET / to every follower every millisecond, which takes most of a core)")
	steady := flag.Duration("steady", 30*time.Second, "how long participants run before their steady-state RSS is read, and how long API requests are counted")
	flag.Parse()
	if *handovers < 1 || *failovers < 1 {
		fmt.Fprintln(os.Stderr, "bench: -handovers and -failovers must be at least 1")
		os.Exit(2)
	}
	if *probe != probeWatch && *probe != probePoll {
		fmt.Fprintln(os.Stderr, "bench: -probe must be watch or poll")
		os.Exit(2)
	}
	if err := run(*bin, *baseline, *probe, *footprint, *handovers, *failovers, *steady); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// row is one line of the table; baseline is the same figure for -baseline.
type row struct{ name, value, baseline, goal, verdict string }

// handoverParticipants take part in the election whose graceful handovers
// are timed: the newest of them, named successor, takes the released lock;
// the others only after a quarter of a retry period.
const handoverParticipants = 10

// statusConns are the numbers of connections that load GET / at once: the
// load generator shares the machine's two cores with the elector, the
// control plane and the other participants, so more connections measure
// queueing on those cores more than the elector.
var statusConns = []int{4, 8}

// statusRounds are how many times each GET / load runs: the machine's other
// work moves single runs by a quarter, so the table reports the median.
const statusRounds = 3

// Goals of the footprint, from the README.
const (
	maxRSS        = 16 << 20
	minStatusRate = 20000 // GET / per second
	maxStatusP99  = 2 * time.Millisecond
)

func run(bin, baseline, probe string, footprintOnly bool, handovers, failovers int, steady time.Duration) error {
	env, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stopping the control plane:", err)
		}
	}()
	dir, err := os.MkdirTemp("", "elector-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	user, err := env.Env.AddUser(envtest.User{Name: "bench", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	b := &bench{bin: bin, kubeconfig: kubeconfig, probe: probe, env: env}
	defer b.stopAll()

	bins := []string{bin}
	if baseline != "" {
		bins = append(bins, baseline)
	}
	footprint, err := b.footprint(bins, steady)
	if err != nil {
		return err
	}
	var rows []row
	if !footprintOnly {
		if rows, err = b.elections(handovers, failovers, steady); err != nil {
			return err
		}
		info, err := os.Stat(bin)
		if err != nil {
			return err
		}
		routed, err := b.routing(handovers)
		if err != nil {
			return err
		}
		rows = append(rows, routed...)
		rows = append(rows, row{name: "elector binary, stripped",
			value: fmt.Sprintf("%.1f MB", float64(info.Size())/1e6), goal: "< 16 MB", verdict: verdict(info.Size() < 16e6)})
	}
	rows = append(rows, footprint...)
	return printTable(rows, baseline != "")
}

func printTable(rows []row, withBaseline bool) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if withBaseline {
		fmt.Fprintln(w, "MEASURE\tVALUE\tBASELINE\tGOAL\tMET")
	} else {
		fmt.Fprintln(w, "MEASURE\tVALUE\tGOAL\tMET")
	}
	for _, r := range rows {
		if withBaseline {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.name, r.value, r.baseline, r.goal, r.verdict)
		} else {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.name, r.value, r.goal, r.verdict)
		}
	}
	return w.Flush()
}

// footprint measures the memory and the GET / speed of each binary, the
// first one's figures judged against the goals. Each binary runs three
// participants of an election of its own, all at the same time, so that
// they share the machine's conditions; their leaders are loaded in turn.
func (b *bench) footprint(bins []string, steady time.Duration) ([]row, error) {
	groups := make([][]*proc, len(bins))
	for i, bin := range bins {
		for j := range 3 {
			p, err := b.start(bin, fmt.Sprintf("f%d-%d", i, j), fmt.Sprintf("footprint-%d", i))
			if err != nil {
				return nil, err
			}
			groups[i] = append(groups[i], p)
		}
	}
	defer func() {
		for _, g := range groups {
			b.stop(g)
		}
	}()
	leaders := make([]*proc, len(bins))
	for i, g := range groups {
		var err error
		if leaders[i], err = waitLeader(g, 30*time.Second); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %d elector binaries, 3 participants each, running for %s\n", len(bins), steady)
	time.Sleep(steady)
	figures := make([][]string, len(bins))
	var steadyRSS memory
	for i, g := range groups {
		m, err := maxMemory(g)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			steadyRSS = m
		}
		figures[i] = append(figures[i], m.String())
	}

	fmt.Fprintf(os.Stderr, "bench: GET / load on each binary's leader, %d rounds\n", statusRounds)
	type result struct {
		rps []float64
		p99 []time.Duration
	}
	results := make([][]result, len(bins)) // by binary, then by statusConns
	for i := range bins {
		results[i] = make([]result, len(statusConns))
	}
	loaded := make([]memory, len(bins)) // right after each binary's last load
	for round := range statusRounds {
		for c, conns := range statusConns {
			for k := range bins {
				// Alternate which binary goes first.
				i := (k + round + c) % len(bins)
				rps, p99, err := statusLoad(leaders[i], 5*time.Second, conns)
				if err != nil {
					return nil, err
				}
				results[i][c].rps = append(results[i][c].rps, rps)
				results[i][c].p99 = append(results[i][c].p99, p99)
				if loaded[i], err = memoryOf(leaders[i]); err != nil {
					return nil, err
				}
			}
		}
	}
	var goals, verdicts []string
	for i := range bins {
		for c := range statusConns {
			rps, p99 := median(results[i][c].rps), median(results[i][c].p99)
			figures[i] = append(figures[i], fmt.Sprintf("%.0f req/s", rps), fmt.Sprintf("%.2f ms", float64(p99)/1e6))
			if i == 0 {
				goals = append(goals, fmt.Sprintf("> %d req/s", minStatusRate), fmt.Sprintf("< %.0f ms", float64(maxStatusP99)/1e6))
				verdicts = append(verdicts, verdict(rps > minStatusRate), verdict(p99 < maxStatusP99))
			}
		}
	}
	for i := range bins {
		figures[i] = append(figures[i], loaded[i].String())
	}

	names := []string{"elector RSS at steady state (max of 3 participants)"}
	goals = append([]string{"< 16 MiB"}, goals...)
	verdicts = append([]string{verdict(steadyRSS.rss < maxRSS)}, verdicts...)
	for _, conns := range statusConns {
		names = append(names,
			fmt.Sprintf("GET / throughput (%d connections), median of %d", conns, statusRounds),
			fmt.Sprintf("GET / latency p99 (%d connections), median of %d", conns, statusRounds))
	}
	names = append(names, "elector RSS right after the GET / load (the loaded leader)")
	goals = append(goals, "< 16 MiB")
	verdicts = append(verdicts, verdict(loaded[0].rss < maxRSS))
	rows := make([]row, len(names))
	for n, name := range names {
		rows[n] = row{name: name, value: figures[0][n], goal: goals[n], verdict: verdicts[n]}
		if len(bins) > 1 {
			rows[n].baseline = figures[1][n]
		}
	}
	return rows, nil
}

// handovers ends the leader with sig n times, its replacement named
// prefix0, prefix1, ..., and returns the times to a new leader, fastest
// first.
func (b *bench) handovers(sig syscall.Signal, prefix string, n int) ([]time.Duration, error) {
	var times []time.Duration
	for i := range n {
		d, err := b.handover(sig, fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			return nil, err
		}
		times = append(times, d)
	}
	slices.Sort(times)
	return times, nil
}

// elections times handovers and failovers and counts the API requests of
// an election, as bench.bin runs it.
func (b *bench) elections(handovers, failovers int, steady time.Duration) ([]row, error) {
	var rows []row
	fmt.Fprintln(os.Stderr, "bench: starting 3 participants (ttl 10s)")
	for i := range 3 {
		if _, err := b.start(b.bin, fmt.Sprintf("p%d", i), "handover"); err != nil {
			return nil, err
		}
	}
	if _, err := waitLeader(b.live(), 30*time.Second); err != nil {
		return nil, err
	}

	fmt.Fprintf(os.Stderr, "bench: counting API requests for %s at steady state\n", steady)
	load3, err := b.requestRates(steady)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(os.Stderr, "bench: %d graceful handovers among %d participants\n", handovers, handoverParticipants)
	for i := len(b.live()); i < handoverParticipants; i++ {
		if _, err := b.start(b.bin, fmt.Sprintf("p%d", i), "handover"); err != nil {
			return nil, err
		}
	}
	times, err := b.handovers(syscall.SIGTERM, "h", handovers)
	if err != nil {
		return nil, err
	}
	p99 := times[(len(times)*99-1)/100]
	fmt.Fprintf(os.Stderr, "bench: handovers, fastest to slowest: %v\n", times)
	rows = append(rows,
		row{name: fmt.Sprintf("graceful handover, median of %d, %d participants (SIGTERM to new leader's %s)",
			len(times), handoverParticipants, probeName[b.probe]), value: ms(times[len(times)/2])},
		row{name: "graceful handover, p99", value: ms(p99), goal: "< 50 ms", verdict: verdict(p99 < 50*time.Millisecond)},
		row{name: "graceful handover, max", value: ms(times[len(times)-1])})
	// Back to three participants for the failovers and the load counts.
	b.stop(b.live()[3:])

	health, err := b.healthFailovers(healthRounds)
	if err != nil {
		return nil, err
	}
	rows = append(rows, health...)

	fmt.Fprintf(os.Stderr, "bench: %d crash failovers\n", failovers)
	if times, err = b.handovers(syscall.SIGKILL, "k", failovers); err != nil {
		return nil, err
	}
	bound := 10*time.Second + 10*time.Second/6
	rows = append(rows,
		row{name: "crash failover, max (SIGKILL to new leader)",
			value: ms(times[len(times)-1]), goal: "<= ttl + retry period = " + ms(bound), verdict: verdict(times[len(times)-1] <= bound)},
		row{name: "crash failover, min",
			value: ms(times[0]), goal: "> ttl - renew deadline (safety)", verdict: verdict(times[0] > 10*time.Second-10*time.Second/3)})
	rows = append(rows, row{name: fmt.Sprintf("epoch: the new leader's above the old leader's, over %d handovers and failovers", b.terms),
		value: fmt.Sprintf("%d of %d", b.epochsUp, b.terms), goal: "every one", verdict: verdict(b.epochsUp == b.terms)})

	for _, verb := range sortedKeys(load3) {
		rows = append(rows, row{name: "API requests on the lock, 3 participants: " + verb, value: fmt.Sprintf("%.2f/s", load3[verb])})
	}
	fmt.Fprintln(os.Stderr, "bench: adding 6 participants to count again")
	for i := range 6 {
		if _, err := b.start(b.bin, fmt.Sprintf("x%d", i), "handover"); err != nil {
			return nil, err
		}
	}
	// A participant that joins names itself the successor once (the newest
	// of them wins within a retry period or two): the steady state is what
	// follows.
	time.Sleep(3 * (10 * time.Second / 6))
	load9, err := b.requestRates(steady)
	if err != nil {
		return nil, err
	}
	for _, verb := range sortedKeys(load9) {
		rows = append(rows, row{name: "API requests on the lock, 9 participants: " + verb, value: fmt.Sprintf("%.2f/s", load9[verb])})
	}
	periodic3 := load3["PUT"] + load3["GET"] + load3["LIST"] + load3["POST"]
	periodic9 := load9["PUT"] + load9["GET"] + load9["LIST"] + load9["POST"]
	rows = append(rows, row{name: "periodic requests (GET+LIST+PUT+POST), 9 vs 3 participants",
		value: fmt.Sprintf("%.2f/s vs %.2f/s", periodic9, periodic3), goal: "no growth with size", verdict: verdict(periodic9 <= periodic3*1.1+0.05)})
	return rows, nil
}

// median of a few figures.
func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

type proc struct {
	*controlplane.Process
	id   string
	addr string
}

type bench struct {
	bin, kubeconfig string
	probe           string
	env             *controlplane.Env
	mu              sync.Mutex
	procs           []*proc
	// terms counts the handovers and failovers timed, and epochsUp those
	// whose new leader's epoch was above the one the old leader said.
	terms, epochsUp int
}

// start runs bin as participant id of electionName.
func (b *bench) start(bin, id, electionName string, extra ...string) (*proc, error) {
	args := append([]string{"-election=" + electionName, "-id=" + id, "-kubeconfig=" + b.kubeconfig, "-http=127.0.0.1:0", "-namespace=default"}, extra...)
	p := &proc{id: id}
	var err error
	if p.Process, p.addr, err = controlplane.StartElector(context.Background(), exec.Command(bin, args...), nil, nil, 10*time.Second); err != nil {
		return nil, fmt.Errorf("participant %s: %w", id, err)
	}
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

func (b *bench) live() []*proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(b.procs), func(p *proc) bool { return p.Exited() })
}

func (b *bench) stopAll() {
	for _, p := range b.live() {
		p.Kill()
	}
}

// stop ends participants gracefully and waits for them.
func (b *bench) stop(procs []*proc) {
	for _, p := range procs {
		_ = p.Signal(syscall.SIGTERM)
		<-p.Done()
	}
}

var client = &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// streamClient reads /watch streams, which stay open; the handover's own
// deadline ends them.
var streamClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func status(p *proc) (election.Status, error) {
	return controlplane.ElectorStatus(context.Background(), client, p.addr)
}

// waitLeader returns the participant of procs that says it leads.
func waitLeader(procs []*proc, timeout time.Duration) (*proc, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if st, err := status(p); err == nil && st.IsLeader {
				return p, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, errors.New("no leader")
}

// handover signals the leader and times until another participant says it
// leads, as seen by the probe. A fresh participant then takes the stopped
// one's place.
func (b *bench) handover(sig syscall.Signal, replacement string) (time.Duration, error) {
	leader, err := waitLeader(b.live(), 30*time.Second)
	if err != nil {
		return 0, err
	}
	var others []*proc
	for _, p := range b.live() {
		if p != leader {
			others = append(others, p)
		}
	}
	// Let the followers see a fresh renewal, at a varying point of the
	// leader's renewal cycle, as they would at any moment.
	time.Sleep(time.Duration(700+len(b.procs)%7*150) * time.Millisecond)
	was, err := status(leader)
	if err != nil {
		return 0, err
	}
	var took time.Duration
	if b.probe == probePoll {
		took, err = pollNewLeader(leader, others, sig)
	} else {
		took, err = watchNewLeader(others, func() error { return leader.Signal(sig) })
	}
	if err != nil {
		return 0, err
	}
	next, err := waitLeader(others, 30*time.Second)
	if err != nil {
		return 0, err
	}
	now, err := status(next)
	if err != nil {
		return 0, err
	}
	b.terms++
	if now.Epoch > was.Epoch {
		b.epochsUp++
	}
	<-leader.Done()
	if _, err := b.start(b.bin, replacement, "handover"); err != nil {
		return 0, err
	}
	return took, nil
}

// probeName names a probe in the table.
var probeName = map[string]string{probeWatch: "/watch event", probePoll: "GET /, polled"}

// The ways of seeing the new leader after a handover.
const (
	// probeWatch reads every follower's GET /watch stream, which the
	// elector writes the moment its status changes, and confirms the first
	// to say it leads with GET /. It costs nothing while it waits, so the
	// participants and the control plane have the machine's cores.
	probeWatch = "watch"
	// probePoll sends GET / to every follower every millisecond. On two
	// cores the polling itself takes most of one.
	probePoll = "poll"
)

// watchNewLeader calls trigger (it signals the leader, say) and times until
// one of others says on its /watch stream that it leads, and GET / agrees.
func watchNewLeader(others []*proc, trigger func() error) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type lead struct {
		p  *proc
		at time.Time
	}
	// Buffered, so that no reader waits on it; cancel ends their streams.
	first := make(chan lead, len(others))
	for _, p := range others {
		w, err := controlplane.WatchElector(ctx, streamClient, p.addr)
		if err != nil {
			return 0, fmt.Errorf("watch %s: %w", p.id, err)
		}
		defer w.Close()
		// The stream's first event is the status as it stands.
		if _, err := w.Next(); err != nil {
			return 0, fmt.Errorf("watch %s: %w", p.id, err)
		}
		go func() {
			for {
				st, err := w.Next()
				if err != nil {
					return
				}
				if st.IsLeader {
					first <- lead{p, time.Now()}
					return
				}
			}
		}()
	}
	start := time.Now()
	if err := trigger(); err != nil {
		return 0, err
	}
	select {
	case l := <-first:
		st, err := status(l.p)
		if err != nil || !st.IsLeader {
			return 0, fmt.Errorf("%s said on /watch that it leads, but GET / says %+v (%v)", l.p.id, st, err)
		}
		return l.at.Sub(start), nil
	case <-ctx.Done():
		return 0, errors.New("no new leader within 30s")
	}
}

// pollNewLeader signals leader and times until one of others answers GET /
// that it leads, polling every one of them every millisecond.
func pollNewLeader(leader *proc, others []*proc, sig syscall.Signal) (time.Duration, error) {
	start := time.Now()
	if err := leader.Signal(sig); err != nil {
		return 0, err
	}
	for time.Since(start) < 30*time.Second {
		var wg sync.WaitGroup
		var found atomic.Bool
		for _, p := range others {
			wg.Go(func() {
				if st, err := status(p); err == nil && st.IsLeader {
					found.Store(true)
				}
			})
		}
		wg.Wait()
		if found.Load() {
			return time.Since(start), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, errors.New("no new leader within 30s")
}

var requestTotal = regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)$`)

// requestRates counts the API server's requests on leases, by verb, over d.
func (b *bench) requestRates(d time.Duration) (map[string]float64, error) {
	before, err := b.leaseRequests()
	if err != nil {
		return nil, err
	}
	time.Sleep(d)
	after, err := b.leaseRequests()
	if err != nil {
		return nil, err
	}
	rates := map[string]float64{}
	for verb, n := range after {
		if delta := n - before[verb]; delta > 0 {
			rates[verb] = delta / d.Seconds()
		}
	}
	return rates, nil
}

func (b *bench) leaseRequests() (map[string]float64, error) {
	raw, err := b.env.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindStringSubmatch(sc.Text())
		if m == nil || !strings.Contains(m[1], `resource="leases"`) {
			continue
		}
		verb := regexp.MustCompile(`verb="([A-Z]+)"`).FindStringSubmatch(m[1])
		v, _ := strconv.ParseFloat(m[2], 64)
		if verb != nil {
			out[verb[1]] += v
		}
	}
	return out, nil
}

// memory is a process's resident set, split into the pages of its binary
// (file) and those it allocated (anon).
type memory struct{ rss, file, anon int64 }

func (m memory) String() string {
	return fmt.Sprintf("%.1f MiB (binary %.1f + anon %.1f)", mib(m.rss), mib(m.file), mib(m.anon))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// maxMemory is the memory of the participant with the largest RSS.
func maxMemory(procs []*proc) (memory, error) {
	var most memory
	for _, p := range procs {
		m, err := memoryOf(p)
		if err != nil {
			return memory{}, err
		}
		if m.rss > most.rss {
			most = m
		}
	}
	return most, nil
}

// memoryOf reads VmRSS, RssFile and RssAnon of one participant.
func memoryOf(p *proc) (memory, error) {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	fields := map[string]*int64{"VmRSS:": &m.rss, "RssFile:": &m.file, "RssAnon:": &m.anon}
	for line := range strings.SplitSeq(string(f), "\n") {
		key, value, _ := strings.Cut(line, "\t")
		if dst := fields[key]; dst != nil {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				return memory{}, fmt.Errorf("participant %s: %s %q: %w", p.id, key, value, err)
			}
			*dst = kb * 1024
			delete(fields, key)
		}
	}
	if len(fields) > 0 {
		return memory{}, fmt.Errorf("participant %s: no %v in /proc/%d/status", p.id, slices.Sorted(maps.Keys(fields)), p.Cmd.Process.Pid)
	}
	return m, nil
}

// statusLoad sends GET / over conns keep-alive connections for d and
// returns requests per second and the 99th percentile latency. It speaks
// HTTP/1.1 on raw connections: a full HTTP client costs more CPU than the
// server it measures, on the same two cores.
func statusLoad(target *proc, d time.Duration, conns int) (float64, time.Duration, error) {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		firstErr  error
		wg        sync.WaitGroup
	)
	stop := time.Now().Add(d)
	for range conns {
		wg.Go(func() {
			local, err := rawGets(target.addr, stop)
			mu.Lock()
			defer mu.Unlock()
			latencies = append(latencies, local...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	slices.Sort(latencies)
	return float64(len(latencies)) / d.Seconds(), latencies[len(latencies)*99/100], nil
}

// rawGets sends GET / on one connection until stop and times each answer.
func rawGets(addr string, stop time.Time) ([]time.Duration, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	req := []byte("GET / HTTP/1.1\r\nHost: elector\r\n\r\n")
	var latencies []time.Duration
	for time.Now().Before(stop) {
		t0 := time.Now()
		if _, err := conn.Write(req); err != nil {
			return latencies, err
		}
		length := -1
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return latencies, err
			}
			if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.HasPrefix(line, "HTTP/1.1 200") {
				return latencies, fmt.Errorf("GET / under load: %s", strings.TrimSpace(line))
			}
			if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if line == "\r\n" {
				break
			}
		}
		if length < 0 {
			return latencies, errors.New("GET / answered without Content-Length")
		}
		if _, err := r.Discard(length); err != nil {
			return latencies, err
		}
		latencies = append(latencies, time.Since(t0))
	}
	return latencies, nil
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
