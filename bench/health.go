package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// The application health check of the health failovers: probed every
// healthPeriod, unhealthy after healthThreshold failures in a row.
const (
	healthPeriod    = 200 * time.Millisecond
	healthThreshold = 2
	healthRounds    = 20
)

// healthFailovers times, over rounds, how long after the leader's
// application turns unhealthy a follower says on /watch that it leads,
// among three participants with -app-health-url. The goal is the README's:
// threshold x period + 100 ms.
func (b *bench) healthFailovers(rounds int) ([]row, error) {
	fmt.Fprintf(os.Stderr, "bench: %d health failovers among 3 participants (app health every %s, threshold %d)\n", rounds, healthPeriod, healthThreshold)
	type app struct {
		healthy atomic.Bool
		srv     *httptest.Server
	}
	apps := map[*proc]*app{}
	var procs []*proc
	for i := range 3 {
		a := &app{}
		a.healthy.Store(true)
		a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !a.healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		defer a.srv.Close()
		p, err := b.start(b.bin, fmt.Sprintf("health%d", i), "health",
			"-app-health-url="+a.srv.URL+"/healthz", "-app-health-period="+healthPeriod.String(), fmt.Sprintf("-app-health-threshold=%d", healthThreshold))
		if err != nil {
			return nil, err
		}
		apps[p] = a
		procs = append(procs, p)
	}
	defer b.stop(procs)
	var times []time.Duration
	for range rounds {
		leader, err := waitLeader(procs, 30*time.Second)
		if err != nil {
			return nil, err
		}
		// A varying point of the probes' period, as at any moment.
		time.Sleep(time.Duration(700+len(times)%7*37) * time.Millisecond)
		var others []*proc
		for _, p := range procs {
			if p != leader {
				others = append(others, p)
			}
		}
		took, err := watchNewLeader(others, func() error { apps[leader].healthy.Store(false); return nil })
		if err != nil {
			return nil, err
		}
		times = append(times, took)
		apps[leader].healthy.Store(true)
	}
	slices.Sort(times)
	bound := healthThreshold*healthPeriod + 100*time.Millisecond
	worst := times[len(times)-1]
	return []row{
		{name: fmt.Sprintf("health failover, median of %d (leader's app turns unhealthy to a follower's /watch event; period %s, threshold %d)",
			len(times), healthPeriod, healthThreshold), value: ms(times[len(times)/2])},
		{name: "health failover, max", value: ms(worst), goal: "<= threshold x period + 100 ms = " + ms(bound), verdict: verdict(worst <= bound)},
	}, nil
}
