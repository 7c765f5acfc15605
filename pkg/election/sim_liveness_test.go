package election

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// simLiveness checks that the election does not stall: whenever no one
// leads, every running participant must be excused by a fault recent
// enough to explain the wait. The bounds follow from how a participant
// that nothing goes wrong for behaves, each with a second or two for
// messages (at most 100 ms each way in any plan) and scheduling:
//
//   - After a fault of the plan (any action: a crash, a pause, a cut, a
//     deletion, a restart) or of the participant's own connection to the
//     lock (a request that failed or was held up, a watch that ended), it
//     sees the lock as it is within a retry period (a poll, or a watch
//     opened again), waits out the lease it sees (TTL), and takes the lock;
//     a lock it had to make, it leads a TTL later instead, and that wait
//     starts when it sees the lock missing. A request that fails ends within
//     the renew deadline. So someone leads within faultBound.
//   - After another process wrote the lock, it waits out that write's lease
//     and takes the lock: writeBound.
//   - After the answer to one of its own writes was lost although the write
//     landed, it sees its write come back (watch or poll), takes it as its
//     own once its request has timed out, and leads within lostAnswerBound.
//     A lost answer to a read or a create is excused
//     like a fault: the read leaves it with an older view to wait out, and a
//     lock it made it leads a TTL later anyway.
//
// A participant's own writes do not excuse it: it knows them.
type simLiveness struct {
	ttl, renewDeadline, retryPeriod time.Duration

	mu      sync.Mutex
	faultAt time.Time            // the last action of the plan
	excused map[int]time.Time    // per process: the end of its own excuses
	blame   map[int]string       // per process: what excused it last
	writes  map[int]simLockWrite // per process: its last write of the lock
	writers map[string]int       // the process that wrote each resourceVersion
}

type simLockWrite struct {
	at     time.Time
	method string
}

func newSimLiveness(plan *simPlan) *simLiveness {
	rd, rp := plan.timings()
	return &simLiveness{
		ttl: plan.TTL.D(), renewDeadline: rd, retryPeriod: rp,
		excused: map[int]time.Time{},
		blame:   map[int]string{},
		writes:  map[int]simLockWrite{},
		writers: map[string]int{},
	}
}

// faultBound, writeBound and lostAnswerBound are the bounds of simLiveness.
func (l *simLiveness) faultBound() time.Duration {
	return l.ttl + l.renewDeadline + 2*l.retryPeriod + 2*time.Second
}

func (l *simLiveness) writeBound() time.Duration {
	return l.ttl + 2*l.retryPeriod + 2*time.Second
}

func (l *simLiveness) lostAnswerBound() time.Duration {
	return l.renewDeadline + 2*l.retryPeriod + 2*time.Second
}

// fault is an action of the plan at now.
func (l *simLiveness) fault(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.faultAt = now
}

// excuse excuses process proc until until.
func (l *simLiveness) excuse(proc int, until time.Time, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until.After(l.excused[proc]) {
		l.excused[proc], l.blame[proc] = until, why
	}
}

// hard is a fault of proc's own connection, noticed at now.
func (l *simLiveness) hard(proc int, now time.Time, why string) {
	l.excuse(proc, now.Add(l.faultBound()), why)
}

// lostAnswer is the answer to a request of proc that the server applied
// at applied, lost on the way back.
func (l *simLiveness) lostAnswer(proc int, method string, applied time.Time) {
	bound := l.faultBound()
	if method == http.MethodPut {
		bound = l.lostAnswerBound()
	}
	l.excuse(proc, applied.Add(bound), fmt.Sprintf("the answer to its %s, applied at %s, was lost", method, simClock(simDay(applied))))
}

// wrote is a write of the lock by proc that the server applied at now,
// making resourceVersion rv.
func (l *simLiveness) wrote(proc int, method, rv string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes[proc] = simLockWrite{now, method}
	l.writers[rv] = proc
}

// lateEvent is a watch event of proc, carrying resourceVersion rv, that is
// held up until at. It tells of its own write (see lostAnswerBound) or of
// another's, whose lease it waits out from then (see writeBound).
func (l *simLiveness) lateEvent(proc int, rv string, at time.Time) {
	l.mu.Lock()
	writer, ok := l.writers[rv]
	l.mu.Unlock()
	why := fmt.Sprintf("an event of its watch was held up until %s", simClock(simDay(at)))
	if ok && writer == proc {
		l.excuse(proc, at.Add(l.lostAnswerBound()), why)
		return
	}
	l.excuse(proc, at.Add(l.writeBound()), why)
}

// due is when proc must see someone lead by, and why not earlier.
func (l *simLiveness) due(proc int) (time.Time, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	due, why := l.faultAt.Add(l.faultBound()), fmt.Sprintf("the last action of the plan at %s", simClock(simDay(l.faultAt)))
	if ex := l.excused[proc]; ex.After(due) {
		due, why = ex, l.blame[proc]
	}
	for other, w := range l.writes {
		if other == proc {
			continue
		}
		if d := w.at.Add(l.writeBound()); d.After(due) {
			due, why = d, fmt.Sprintf("a %s of the lock by p%d at %s", w.method, other, simClock(simDay(w.at)))
		}
	}
	return due, why
}

// simDay is t as a duration since midnight of the bubble's clock.
func simDay(t time.Time) time.Duration {
	return t.Sub(t.Truncate(24 * time.Hour))
}

// simLockResource reports whether an API path is the lock's.
func simLockResource(path string) bool {
	switch simResource(path) {
	case "leases", "configmaps", "endpoints":
		return true
	}
	return false
}
