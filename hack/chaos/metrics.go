package main

import (
	"context"
	"maps"
	"sync"

	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// lockResources are the resources the elections' locks are made of.
var lockResources = map[string]bool{"leases": true, "configmaps": true, "endpoints": true}

// requestCounter adds up kube-apiserver's requests on the lock types across
// restarts, which start its counts from zero.
type requestCounter struct {
	mu       sync.Mutex
	baseline bool
	last     map[controlplane.Request]float64
	total    map[string]float64 // by "resource verb"
}

// scrape reads /metrics and adds what each count grew by since the last
// scrape. The first scrape is the baseline.
func (rc *requestCounter) scrape(ctx context.Context, admin kubernetes.Interface) error {
	counts, err := controlplane.Requests(ctx, admin)
	if err != nil {
		return err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.last == nil {
		rc.last, rc.total = map[controlplane.Request]float64{}, map[string]float64{}
	}
	for r, v := range counts {
		if !lockResources[r.Resource] {
			continue
		}
		prev := rc.last[r]
		rc.last[r] = v
		if rc.baseline {
			// A count seen for the first time counts from zero; one that
			// went down was reset by a restart missed in between.
			if v < prev {
				prev = 0
			}
			rc.total[r.String()] += v - prev
		}
	}
	rc.baseline = true
	return nil
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
