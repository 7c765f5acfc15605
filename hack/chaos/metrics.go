package main

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"regexp"
	"strconv"
	"sync"

	"k8s.io/client-go/kubernetes"
)

var requestTotal = regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)$`)
var labelRE = regexp.MustCompile(`(\w+)="([^"]*)"`)

// lockResources are the resources the elections' locks are made of.
var lockResources = map[string]bool{"leases": true, "configmaps": true, "endpoints": true}

// requestCounter adds up apiserver_request_total on the lock types across
// API server restarts, which reset the counters.
type requestCounter struct {
	mu       sync.Mutex
	baseline bool
	last     map[string]float64 // by series
	total    map[string]float64 // by "resource verb"
}

// scrape reads /metrics and adds what each series grew by since the last
// scrape. The first scrape is the baseline.
func (rc *requestCounter) scrape(ctx context.Context, admin kubernetes.Interface) error {
	raw, err := admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.last == nil {
		rc.last, rc.total = map[string]float64{}, map[string]float64{}
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRE.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if !lockResources[labels["resource"]] {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		prev := rc.last[m[1]]
		rc.last[m[1]] = v
		if rc.baseline {
			// A series seen for the first time counts from zero; one that
			// went down was reset by a restart missed in between.
			if v < prev {
				prev = 0
			}
			rc.total[labels["resource"]+" "+labels["verb"]] += v - prev
		}
	}
	rc.baseline = true
	return sc.Err()
}

// restarted forgets the last values: a new API server counts from zero.
// Requests between the last scrape and the restart are lost.
func (rc *requestCounter) restarted() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	clear(rc.last)
}

// totals is a copy of the counts by "resource verb".
func (rc *requestCounter) totals() map[string]float64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.total)
}
