package election

import (
	"sync"
	"testing"
	"time"
)

// simFateHook, when set, may change the fate the simulated network gave a
// request: a test that needs one exact interleaving sets it.
var simFateHook func(proc int, method string, watch, lock bool, f *simFate)

// simOneIDEqualRecordsPlan: p1 and p2 share the ID x and take a released
// lock in the same second, so they write equal records. The test's fate
// hook makes p2's write land with its answer lost (noticed 2.3 s later) and
// p1's first renewal never reach the server (noticed 0.6 s later); p2 takes
// its landed write over, and is then cut off.
func simOneIDEqualRecordsPlan(seed uint64) *simPlan {
	ttl := 15 * time.Second
	p := &simPlan{Seed: seed, Family: "one-id-equal-records", TTL: simDuration(ttl), RenewDeadline: simDuration(10 * time.Second), RetryPeriod: simDuration(2 * time.Second), History: 50, Lock: LockLeases}
	p.Offset = simDuration(100 * time.Millisecond)
	p.Net = simNetParams{Latency: simDuration(time.Millisecond)}
	start := ttl + time.Second
	p1 := 1
	p.Events = []simAction{
		{At: 0, Do: "start", ID: "q"},
		{At: simDuration(ttl + 500*time.Millisecond), Do: "stop", Who: 0},
		{At: simDuration(start), Do: "start", ID: "x"},
		{At: simDuration(start + 3*time.Millisecond), Do: "start", SameAs: &p1},
		{At: simDuration(start + 2900*time.Millisecond), Do: "partition", Who: 2, For: simDuration(3 * ttl), Mode: "drop"},
	}
	p.Length = simDuration(start + 4*ttl)
	p.sortEvents()
	return p
}

func init() {
	simFamilies = append(simFamilies, simFamily{"one-id-equal-records", "TestSimOneIDEqualRecords", simOneIDEqualRecordsPlan})
}

// TestSimOneIDEqualRecords: a leader whose renewal conflicts with a record
// equal to one of its own lost writes cannot tell it from another process
// with its ID that took the lock over; renewing over it let both lead at
// once. It steps down instead.
func TestSimOneIDEqualRecords(t *testing.T) {
	var mu sync.Mutex
	puts := map[int]int{}
	simFateHook = func(proc int, method string, watch, lock bool, f *simFate) {
		if !lock || watch || method != "PUT" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		puts[proc]++
		switch {
		case proc == 2 && puts[proc] == 1:
			f.lost, f.drop, f.resetIn = true, false, 2300*time.Millisecond
		case proc == 1 && puts[proc] == 2:
			f.drop, f.lost, f.resetIn = true, false, 600*time.Millisecond
		}
	}
	defer func() { simFateHook = nil }()
	simRunFamily(t, simFamilyNamed("one-id-equal-records"), 1, false)
}
