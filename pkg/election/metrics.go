package election

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the elector's Prometheus metrics, all prefixed elector_.
type Metrics struct {
	isLeader     prometheus.Gauge
	transitions  prometheus.Counter
	renewSeconds *prometheus.HistogramVec
	lastRenew    prometheus.Gauge
	apiErrors    *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them, with the Go and process
// collectors, on reg. A nil reg keeps them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "elector_is_leader",
			Help: "1 while this participant leads the election, 0 otherwise.",
		}),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "elector_leader_transitions_total",
			Help: "Changes of the election's leader observed by this participant.",
		}),
		renewSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "elector_renew_duration_seconds",
			Help:    "Latency of lease renewals by this participant while it leads.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		lastRenew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "elector_last_renew_timestamp_seconds",
			Help: "Unix time of this participant's last successful renewal.",
		}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "elector_api_errors_total",
			Help: "Failed requests to the API server, by operation.",
		}, []string{"operation"}),
	}
	if reg != nil {
		reg.MustRegister(m.isLeader, m.transitions, m.renewSeconds, m.lastRenew, m.apiErrors,
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return m
}

func (m *Metrics) leading(on bool) {
	if on {
		m.isLeader.Set(1)
	} else {
		m.isLeader.Set(0)
	}
}

func (m *Metrics) holderChanged() { m.transitions.Inc() }

func (m *Metrics) renewLatency(d time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.renewSeconds.WithLabelValues(result).Observe(d.Seconds())
}

func (m *Metrics) renewed(at time.Time) { m.lastRenew.Set(float64(at.UnixNano()) / 1e9) }

func (m *Metrics) apiError(op string) { m.apiErrors.WithLabelValues(op).Inc() }
