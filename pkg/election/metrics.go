package election

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Metrics are the elector's Prometheus metrics, all prefixed elector_, with
// the usual go_ and process_ metrics beside them.
//
// They are written in the Prometheus text format by hand rather than with
// the Prometheus client library: that library and the protobuf runtime it
// brings are a megabyte of a binary meant to be a small sidecar, for a
// dozen metrics.
type Metrics struct {
	mu sync.Mutex
	// info labels elector_info: the election, this participant's ID and
	// its lock; empty until New describes the elector.
	info        string
	isLeader    float64
	transitions uint64
	lastRenew   float64
	apiErrors   map[string]uint64
	renew       map[string]*histogram
	duplicates  uint64
	// appHealthy is the verdict of the application health check, -1 when
	// there is none.
	appHealthy float64
	// notify counts the deliveries to -notify-url (see notify.go); nil
	// without one.
	notify *notifyMetrics
}

// renewBuckets are the upper bounds, in seconds, of the renewal latency
// histogram: from a local API server's milliseconds to a renew deadline.
var renewBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	count  uint64
	sum    float64
}

// apiOperations are the operations elector_api_errors_total counts, each
// written at 0 from the start: a counter that appears only at its first
// error hides that error from rate() and increase(), and from the alerts
// built on them. The metrics test checks the list against the package's
// calls.
var apiOperations = []string{"acquire", "event", "get", "label", "propose", "renew", "service", "watch"}

// renewResults are the values of elector_renew_duration_seconds' result
// label, written from the start for the same reason.
var renewResults = []string{"error", "success"}

// NewMetrics returns the elector's metrics, all at zero.
func NewMetrics() *Metrics {
	m := &Metrics{apiErrors: map[string]uint64{}, renew: map[string]*histogram{}, appHealthy: -1}
	for _, op := range apiOperations {
		m.apiErrors[op] = 0
	}
	for _, result := range renewResults {
		m.renew[result] = &histogram{counts: make([]uint64, len(renewBuckets))}
	}
	return m
}

// describe names the election these metrics count, for elector_info: the
// election, this participant's ID, and its lock object as
// resource/namespace/name. The other series carry no such labels: joined
// on the scrape target (job, instance), elector_info labels them all, and
// queries of the series as they were keep working.
func (m *Metrics) describe(election, id, lock string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.info = `election="` + escapeLabel(election) + `",identity="` + escapeLabel(id) + `",lock="` + escapeLabel(lock) + `"`
}

// escapeLabel escapes a label value as the text format requires.
var escapeLabel = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace

func (m *Metrics) leading(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.isLeader = gaugeOf(on)
}

func (m *Metrics) appHealth(healthy bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appHealthy = gaugeOf(healthy)
}

// gaugeOf is a yes-or-no gauge's value.
func gaugeOf(yes bool) float64 {
	if yes {
		return 1
	}
	return 0
}

func (m *Metrics) holderChanged() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.transitions++
}

func (m *Metrics) renewLatency(d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.renew[result]
	s := d.Seconds()
	for i, le := range renewBuckets {
		if s <= le {
			h.counts[i]++
			break
		}
	}
	h.count++
	h.sum += s
}

func (m *Metrics) renewed(at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastRenew = float64(at.UnixNano()) / 1e9
}

func (m *Metrics) duplicateID() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.duplicates++
}

func (m *Metrics) apiError(op string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apiErrors[op]++
}

// WriteTo writes every metric in the Prometheus text format (version 0.0.4).
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	p := promWriter{w: bw}
	m.mu.Lock()
	if m.info != "" {
		p.metric("elector_info", "gauge",
			"Always 1; its labels name the election, this participant's ID and its lock object (resource/namespace/name).", m.info, 1)
	}
	p.metric("elector_is_leader", "gauge", "1 while this participant leads the election, 0 otherwise.", "", m.isLeader)
	p.metric("elector_leader_transitions_total", "counter", "Changes of the election's leader observed by this participant.", "", float64(m.transitions))
	p.metric("elector_last_renew_timestamp_seconds", "gauge", "Unix time of this participant's last successful renewal.", "", m.lastRenew)
	p.metric("elector_duplicate_id_total", "counter", "Times this participant found another process renewing the lock with its ID.", "", float64(m.duplicates))
	if m.appHealthy >= 0 {
		p.metric("elector_app_healthy", "gauge",
			"1 while the application health check (-app-health-url) finds the application healthy, 0 otherwise.", "", m.appHealthy)
	}
	m.notify.write(&p)
	p.help("elector_api_errors_total", "counter", "Failed requests to the API server, by operation.")
	for _, op := range slices.Sorted(maps.Keys(m.apiErrors)) {
		p.sample("elector_api_errors_total", `operation="`+op+`"`, float64(m.apiErrors[op]))
	}
	p.help("elector_renew_duration_seconds", "histogram", "Latency of lease renewals by this participant while it leads.")
	for _, result := range slices.Sorted(maps.Keys(m.renew)) {
		h := m.renew[result]
		var cum uint64
		for i, le := range renewBuckets {
			cum += h.counts[i]
			p.sample("elector_renew_duration_seconds_bucket", `result="`+result+`",le="`+strconv.FormatFloat(le, 'g', -1, 64)+`"`, float64(cum))
		}
		p.sample("elector_renew_duration_seconds_bucket", `result="`+result+`",le="+Inf"`, float64(h.count))
		p.sample("elector_renew_duration_seconds_sum", `result="`+result+`"`, h.sum)
		p.sample("elector_renew_duration_seconds_count", `result="`+result+`"`, float64(h.count))
	}
	m.mu.Unlock()
	writeGoMetrics(&p)
	writeProcessMetrics(&p)
	if p.err == nil {
		p.err = bw.Flush()
	}
	return p.n, p.err
}

// promWriter writes text-format lines and keeps the first error.
type promWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (p *promWriter) printf(format string, args ...any) {
	if p.err != nil {
		return
	}
	n, err := fmt.Fprintf(p.w, format, args...)
	p.n += int64(n)
	p.err = err
}

func (p *promWriter) help(name, typ, help string) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (p *promWriter) sample(name, labels string, v float64) {
	value := strconv.FormatFloat(v, 'g', -1, 64)
	if math.IsInf(v, 1) {
		value = "+Inf"
	}
	if labels != "" {
		p.printf("%s{%s} %s\n", name, labels, value)
		return
	}
	p.printf("%s %s\n", name, value)
}

func (p *promWriter) metric(name, typ, help, labels string, v float64) {
	p.help(name, typ, help)
	p.sample(name, labels, v)
}

func writeGoMetrics(p *promWriter) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.metric("go_goroutines", "gauge", "Number of goroutines that currently exist.", "", float64(runtime.NumGoroutine()))
	p.metric("go_info", "gauge", "Information about the Go environment.", `version="`+runtime.Version()+`"`, 1)
	p.metric("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated in heap and currently in use.", "", float64(ms.HeapAlloc))
	p.metric("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use.", "", float64(ms.HeapInuse))
	p.metric("go_memstats_sys_bytes", "gauge", "Number of bytes obtained from the system.", "", float64(ms.Sys))
	p.metric("go_memstats_mallocs_total", "counter", "Total number of heap objects allocated.", "", float64(ms.Mallocs))
	p.metric("go_gc_cycles_total", "counter", "Number of completed GC cycles.", "", float64(ms.NumGC))
	p.metric("go_gc_pause_seconds_total", "counter", "Total time the world was stopped for GC.", "", float64(ms.PauseTotalNs)/1e9)
}

// writeProcessMetrics reads /proc/self; where there is no /proc (not
// Linux), it writes nothing.
func writeProcessMetrics(p *promWriter) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// Fields after "(comm)": state is field 3; utime 14, stime 15,
	// starttime 22, vsize 23, rss 24 (in pages).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	field := func(n int) float64 {
		v, _ := strconv.ParseFloat(f[n-3], 64)
		return v
	}
	const ticks = 100 // USER_HZ, 100 on every Linux the elector runs on
	p.metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", "", (field(14)+field(15))/ticks)
	p.metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "", field(24)*float64(os.Getpagesize()))
	p.metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "", field(23))
	if boot := bootTime(); boot > 0 {
		p.metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", "", boot+field(22)/ticks)
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.metric("process_open_fds", "gauge", "Number of open file descriptors.", "", float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		p.metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", "", float64(lim.Cur))
	}
}

// bootTime is the btime line of /proc/stat: when the machine booted.
func bootTime() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			t, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return t
		}
	}
	return 0
}
