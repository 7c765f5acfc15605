package election

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape writes m and parses it with Prometheus's own parser, so a scrape
// never fails on the hand-written exposition.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("not valid Prometheus text: %v\n%s", err, buf.String())
	}
	return families
}

// labels are a sample's labels as a map.
func labels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// TestMetricsFormat parses the hand-written exposition with Prometheus's own
// parser, so a scrape never fails on it.
func TestMetricsFormat(t *testing.T) {
	m := NewMetrics()
	m.describe("example", `pod-"a"\b`, "leases/default/example")
	m.leading(true)
	m.holderChanged()
	m.renewLatency(3*time.Millisecond, nil)
	m.renewLatency(2*time.Second, errors.New("timeout"))
	m.renewed(time.Unix(1700000000, 0))
	m.apiError("renew")

	families := scrape(t, m)
	for _, name := range []string{
		"elector_info", "elector_is_leader", "elector_leader_transitions_total", "elector_last_renew_timestamp_seconds",
		"elector_api_errors_total", "elector_renew_duration_seconds", "elector_duplicate_id_total",
		"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total",
	} {
		if families[name] == nil {
			t.Errorf("no metric %s", name)
		}
	}
	if v := families["elector_is_leader"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("elector_is_leader = %v, want 1", v)
	}
	for _, metric := range families["elector_renew_duration_seconds"].GetMetric() {
		h := metric.GetHistogram()
		if h.GetSampleCount() != 1 {
			t.Errorf("histogram %v: count %d, want 1", metric.GetLabel(), h.GetSampleCount())
		}
		var last uint64
		for _, b := range h.GetBucket() {
			if b.GetCumulativeCount() < last {
				t.Errorf("buckets not cumulative: %v", h.GetBucket())
			}
			last = b.GetCumulativeCount()
		}
	}
	if rss := families["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); rss < 1<<20 {
		t.Errorf("process_resident_memory_bytes = %v, not a plausible RSS", rss)
	}
}

// TestMetricsInfo: elector_info names the election, the participant and its
// lock, with values escaped as the text format requires; the other series
// keep the labels they had, so queries written for them still match.
func TestMetricsInfo(t *testing.T) {
	m := NewMetrics()
	if families := scrape(t, m); families["elector_info"] != nil {
		t.Errorf("elector_info before describe: %v, want none (it would carry empty labels)", families["elector_info"])
	}
	id := "pod-\"a\"\\b\nc"
	m.describe("example", id, "leases/default/example")
	families := scrape(t, m)
	info := families["elector_info"].GetMetric()
	if len(info) != 1 {
		t.Fatalf("elector_info has %d series, want 1", len(info))
	}
	want := map[string]string{"election": "example", "identity": id, "lock": "leases/default/example"}
	if diff := cmp.Diff(want, labels(info[0])); diff != "" {
		t.Errorf("elector_info labels (-want +got):\n%s", diff)
	}
	if v := info[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("elector_info = %v, want 1", v)
	}
	for _, name := range []string{"elector_is_leader", "elector_leader_transitions_total", "elector_last_renew_timestamp_seconds", "elector_duplicate_id_total"} {
		if l := labels(families[name].GetMetric()[0]); len(l) != 0 {
			t.Errorf("%s has labels %v, want none", name, l)
		}
	}
}

// TestMetricsStartAtZero: before anything happens, every operation's error
// counter and both renewal results are written at 0, so that rate() and
// increase() see the first error.
func TestMetricsStartAtZero(t *testing.T) {
	families := scrape(t, NewMetrics())
	var ops []string
	for _, metric := range families["elector_api_errors_total"].GetMetric() {
		if v := metric.GetCounter().GetValue(); v != 0 {
			t.Errorf("elector_api_errors_total%v = %v, want 0", labels(metric), v)
		}
		ops = append(ops, labels(metric)["operation"])
	}
	if diff := cmp.Diff(apiOperations, ops); diff != "" {
		t.Errorf("elector_api_errors_total operations (-want +got):\n%s", diff)
	}
	var results []string
	for _, metric := range families["elector_renew_duration_seconds"].GetMetric() {
		if n := metric.GetHistogram().GetSampleCount(); n != 0 {
			t.Errorf("elector_renew_duration_seconds%v count = %d, want 0", labels(metric), n)
		}
		results = append(results, labels(metric)["result"])
	}
	if diff := cmp.Diff(renewResults, results); diff != "" {
		t.Errorf("elector_renew_duration_seconds results (-want +got):\n%s", diff)
	}
}

// TestAPIOperationsListed: every operation the package counts a failure of
// (the literal passed to apiResult or apiError) is in apiOperations, and
// every one listed is counted somewhere, so the list written at 0 is the
// list that can move.
func TestAPIOperationsListed(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	counted := map[string]bool{}
	for _, entry := range entries {
		name := entry.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			// apiResult and apiError pass their parameter on: not call sites.
			forwarder := fn.Name.Name == "apiResult" || fn.Name.Name == "apiError"
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "apiResult" && sel.Sel.Name != "apiError") {
					return true
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				switch {
				case ok && lit.Kind == token.STRING:
					op, _ := strconv.Unquote(lit.Value)
					counted[op] = true
				case !forwarder:
					t.Errorf("%s: %s is not given a string literal: this test cannot check it against apiOperations", fset.Position(call.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
	got := slices.Sorted(maps.Keys(counted))
	if diff := cmp.Diff(apiOperations, got); diff != "" {
		t.Errorf("apiOperations (-listed +counted by the package):\n%s", diff)
	}
}

// TestMetricsREADME: the README's metrics table lists every elector_ metric
// the elector writes, with its type, and no other.
func TestMetricsREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n### Metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Metrics section")
	}
	table, _, _ = strings.Cut(table, "\n#")
	documented := map[string]string{}
	for line := range strings.Lines(table) {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`elector_") {
			continue
		}
		name, _, _ := strings.Cut(strings.Trim(strings.TrimSpace(cells[1]), "`"), "{")
		documented[name] = strings.TrimSpace(cells[2])
	}

	m := NewMetrics()
	m.describe("example", "a", "leases/default/example")
	m.appHealth(true)
	m.notifyOn()
	written := map[string]string{}
	for name, family := range scrape(t, m) {
		if strings.HasPrefix(name, "elector_") {
			written[name] = strings.ToLower(family.GetType().String())
		}
	}
	if diff := cmp.Diff(written, documented); diff != "" {
		t.Errorf("README.md's metrics table (name: type) against what the elector writes (-written +documented):\n%s", diff)
	}
}
