package election

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// simReleaseRacePlan: q leads, four followers watch it, and q stops
// gracefully: its release sends all four at the lock at once (no successor
// is named).
func simReleaseRacePlan(seed uint64) *simPlan {
	ttl := 10 * time.Second
	p := &simPlan{Seed: seed, Family: "release-race", TTL: simDuration(ttl), History: 50, Lock: LockLeases, Race: true}
	p.Offset = simDuration(100 * time.Millisecond)
	p.Net = simNetParams{Latency: simDuration(time.Millisecond)}
	p.Events = []simAction{{At: 0, Do: "start", ID: "q"}}
	for _, id := range []string{"a", "b", "c", "d"} {
		p.Events = append(p.Events, simAction{At: simDuration(time.Second), Do: "start", ID: id})
	}
	p.Events = append(p.Events, simAction{At: simDuration(2 * ttl), Do: "stop", Who: 0})
	p.Length = simDuration(3 * ttl)
	p.sortEvents()
	return p
}

func init() {
	simFamilies = append(simFamilies, simFamily{"release-race", "TestSimLosersWaitForTheWatch", simReleaseRacePlan})
}

// TestSimLosersWaitForTheWatch: followers that lose the race for a released
// lock learn the winner's version from their watch, not from a read of
// their own each: those reads would land on the API server at the instant
// it answers the winner, and slow the handover.
func TestSimLosersWaitForTheWatch(t *testing.T) {
	var mu sync.Mutex
	requests := map[int][]string{} // by process: its requests on the lock, but watches
	simFateHook = func(proc int, method string, watch, lock bool, f *simFate) {
		if !lock || watch {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		requests[proc] = append(requests[proc], method)
	}
	defer func() { simFateHook = nil }()
	simRunFamily(t, simFamilyNamed("release-race"), 1, false)

	mu.Lock()
	defer mu.Unlock()
	var raced int
	for proc := 1; proc <= 4; proc++ {
		got := requests[proc]
		put := slices.Index(got, "PUT")
		if put < 0 {
			t.Errorf("follower %d never tried to take the released lock: %v", proc, got)
			continue
		}
		raced++
		if slices.Contains(got[put:], "GET") {
			t.Errorf("follower %d read the lock after it raced for it (requests %v); the watch brings the winner's version", proc, got)
		}
	}
	if raced < 2 {
		t.Errorf("%d followers raced for the released lock; the test needs at least two", raced)
	}
}
