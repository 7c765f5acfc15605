package election

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsFormat parses the hand-written exposition with Prometheus's own
// parser, so a scrape never fails on it.
func TestMetricsFormat(t *testing.T) {
	m := NewMetrics()
	m.leading(true)
	m.holderChanged()
	m.renewLatency(3*time.Millisecond, nil)
	m.renewLatency(2*time.Second, errors.New("timeout"))
	m.renewed(time.Unix(1700000000, 0))
	m.apiError("renew")

	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("not valid Prometheus text: %v\n%s", err, buf.String())
	}
	for _, name := range []string{
		"elector_is_leader", "elector_leader_transitions_total", "elector_last_renew_timestamp_seconds",
		"elector_api_errors_total", "elector_renew_duration_seconds",
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
