// Command bench measures the elector on the local control plane and prints
// each figure beside its goal: handover and failover times, the load an
// election puts on the API server, memory and binary size, and the speed of
// GET /. Run it with `make bench`.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
	handovers := flag.Int("handovers", 100, "graceful handovers to time, among handoverParticipants participants")
	failovers := flag.Int("failovers", 3, "crash failovers to time")
	steady := flag.Duration("steady", 30*time.Second, "how long to count API requests at steady state")
	flag.Parse()
	if err := run(*bin, *handovers, *failovers, *steady); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct{ name, value, goal, verdict string }

// handoverParticipants take part in the election whose graceful handovers
// are timed: the more followers, the more of them race for the released
// lock.
const handoverParticipants = 10

// statusConns are the numbers of connections that load GET / at once: the
// load generator shares the machine's two cores with the elector, the
// control plane and the other participants, so more connections measure
// queueing on those cores more than the elector.
var statusConns = []int{4, 8}

func run(bin string, handovers, failovers int, steady time.Duration) error {
	env, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		return err
	}
	defer env.Stop()
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
	b := &bench{bin: bin, kubeconfig: kubeconfig, env: env}
	defer b.stopAll()
	var rows []row

	fmt.Fprintln(os.Stderr, "bench: starting 3 participants (ttl 10s)")
	for i := range 3 {
		if _, err := b.start(fmt.Sprintf("p%d", i), "handover"); err != nil {
			return err
		}
	}
	if _, err := b.waitLeader(30 * time.Second); err != nil {
		return err
	}

	// Steady state first, while the three are fresh.
	fmt.Fprintf(os.Stderr, "bench: counting API requests for %s at steady state\n", steady)
	load3, err := b.requestRates(steady)
	if err != nil {
		return err
	}
	rss, err := b.maxRSS()
	if err != nil {
		return err
	}

	fmt.Fprintln(os.Stderr, "bench: GET / load")
	var statusRows []row
	target := b.live()[0]
	for _, conns := range statusConns {
		rps, p99, err := b.statusLoad(target, 5*time.Second, conns)
		if err != nil {
			return err
		}
		statusRows = append(statusRows,
			row{fmt.Sprintf("GET / throughput (%d connections)", conns), fmt.Sprintf("%.0f req/s", rps), "> 20000 req/s", verdict(rps > 20000)},
			row{fmt.Sprintf("GET / latency p99 (%d connections)", conns), fmt.Sprintf("%.2f ms", float64(p99)/1e6), "< 2 ms", verdict(p99 < 2*time.Millisecond)})
	}
	loadedRSS, err := rssOf(target)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "bench: %d graceful handovers among %d participants\n", handovers, handoverParticipants)
	for i := len(b.live()); i < handoverParticipants; i++ {
		if _, err := b.start(fmt.Sprintf("p%d", i), "handover"); err != nil {
			return err
		}
	}
	var times []time.Duration
	for i := range handovers {
		d, err := b.handover(syscall.SIGTERM, fmt.Sprintf("h%d", i))
		if err != nil {
			return err
		}
		times = append(times, d)
	}
	slices.Sort(times)
	p99 := times[(len(times)*99-1)/100]
	rows = append(rows,
		row{fmt.Sprintf("graceful handover, median of %d, %d participants (SIGTERM to new leader's GET /)", len(times), handoverParticipants), ms(times[len(times)/2]), "", ""},
		row{"graceful handover, p99", ms(p99), "< 50 ms", verdict(p99 < 50*time.Millisecond)},
		row{"graceful handover, max", ms(times[len(times)-1]), "", ""})
	// Back to three participants for the failovers and the load counts.
	for _, p := range b.live()[3:] {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}

	fmt.Fprintf(os.Stderr, "bench: %d crash failovers\n", failovers)
	times = times[:0]
	for i := range failovers {
		d, err := b.handover(syscall.SIGKILL, fmt.Sprintf("k%d", i))
		if err != nil {
			return err
		}
		times = append(times, d)
	}
	slices.Sort(times)
	bound := 10*time.Second + 10*time.Second/6
	rows = append(rows,
		row{"crash failover, max (SIGKILL to new leader)", ms(times[len(times)-1]), "<= ttl + retry period = " + ms(bound), verdict(times[len(times)-1] <= bound)},
		row{"crash failover, min", ms(times[0]), "> ttl - renew deadline (safety)", verdict(times[0] > 10*time.Second-10*time.Second/3)})

	for _, verb := range sortedKeys(load3) {
		rows = append(rows, row{"API requests on the lock, 3 participants: " + verb, fmt.Sprintf("%.2f/s", load3[verb]), "", ""})
	}
	fmt.Fprintln(os.Stderr, "bench: adding 6 participants to count again")
	for i := range 6 {
		if _, err := b.start(fmt.Sprintf("x%d", i), "handover"); err != nil {
			return err
		}
	}
	time.Sleep(2 * time.Second)
	load9, err := b.requestRates(steady)
	if err != nil {
		return err
	}
	for _, verb := range sortedKeys(load9) {
		rows = append(rows, row{"API requests on the lock, 9 participants: " + verb, fmt.Sprintf("%.2f/s", load9[verb]), "", ""})
	}
	periodic3 := load3["PUT"] + load3["GET"] + load3["LIST"] + load3["POST"]
	periodic9 := load9["PUT"] + load9["GET"] + load9["LIST"] + load9["POST"]
	rows = append(rows, row{"periodic requests (GET+LIST+PUT+POST), 9 vs 3 participants", fmt.Sprintf("%.2f/s vs %.2f/s", periodic9, periodic3), "no growth with size", verdict(periodic9 <= periodic3*1.1+0.05)})

	info, err := os.Stat(bin)
	if err != nil {
		return err
	}
	rows = append(rows,
		row{"elector RSS at steady state (max of participants)", fmt.Sprintf("%.1f MiB", float64(rss)/(1<<20)), "< 16 MiB", verdict(rss < 16<<20)},
		row{"elector RSS right after the GET / load", fmt.Sprintf("%.1f MiB", float64(loadedRSS)/(1<<20)), "< 16 MiB", verdict(loadedRSS < 16<<20)},
		row{"elector binary, stripped", fmt.Sprintf("%.1f MB", float64(info.Size())/1e6), "< 16 MB", verdict(info.Size() < 16e6)},
	)
	rows = append(rows, statusRows...)

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEASURE\tVALUE\tGOAL\tMET")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.name, r.value, r.goal, r.verdict)
	}
	return w.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

type proc struct {
	id   string
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

type bench struct {
	bin, kubeconfig string
	env             *controlplane.Env
	mu              sync.Mutex
	procs           []*proc
}

var listening = regexp.MustCompile(`msg="serving leader state" address=(\S+)`)

func (b *bench) start(id, electionName string) (*proc, error) {
	cmd := exec.Command(b.bin, "-election="+electionName, "-id="+id, "-kubeconfig="+b.kubeconfig, "-http=127.0.0.1:0", "-namespace=default")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{id: id, cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	select {
	case p.addr = <-addr:
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("participant %s did not serve", id)
	}
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

func (b *bench) live() []*proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*proc
	for _, p := range b.procs {
		select {
		case <-p.done:
		default:
			out = append(out, p)
		}
	}
	return out
}

func (b *bench) stopAll() {
	for _, p := range b.live() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

var client = &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func status(p *proc) (election.Status, error) {
	var st election.Status
	resp, err := client.Get("http://" + p.addr + "/")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (b *bench) waitLeader(timeout time.Duration) (*proc, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, p := range b.live() {
			if st, err := status(p); err == nil && st.IsLeader {
				return p, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, errors.New("no leader")
}

// handover signals the leader and times until another participant's GET /
// says it leads, polling every participant every millisecond. A fresh
// participant then takes the stopped one's place.
func (b *bench) handover(sig syscall.Signal, replacement string) (time.Duration, error) {
	leader, err := b.waitLeader(30 * time.Second)
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
	start := time.Now()
	if err := leader.cmd.Process.Signal(sig); err != nil {
		return 0, err
	}
	var took time.Duration
	for took == 0 {
		if time.Since(start) > 30*time.Second {
			return 0, errors.New("no new leader within 30s")
		}
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
			took = time.Since(start)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	<-leader.done
	if _, err := b.start(replacement, "handover"); err != nil {
		return 0, err
	}
	return took, nil
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

// maxRSS is the largest VmRSS of the participants.
func (b *bench) maxRSS() (int64, error) {
	var most int64
	for _, p := range b.live() {
		rss, err := rssOf(p)
		if err != nil {
			return 0, err
		}
		most = max(most, rss)
	}
	return most, nil
}

// rssOf reads VmRSS of one participant.
func rssOf(p *proc) (int64, error) {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(f), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for participant %s", p.id)
}

// statusLoad sends GET / over conns keep-alive connections for d and
// returns requests per second and the 99th percentile latency. It speaks
// HTTP/1.1 on raw connections: a full HTTP client costs more CPU than the
// server it measures, on the same two cores.
func (b *bench) statusLoad(target *proc, d time.Duration, conns int) (float64, time.Duration, error) {
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
