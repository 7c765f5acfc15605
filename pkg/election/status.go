package election

import "time"

// Status is the answer to GET /: upstream k8s-elector's document, field for
// field. Fields may be added; these never change.
type Status struct {
	// IsLeader is true only while this participant holds a lease it renewed
	// within the renew deadline.
	IsLeader bool `json:"is_leader"`
	// Leader is the ID of the participant whose lease this one observes as
	// running; empty while no one leads.
	Leader string `json:"leader"`
	// Node is this participant's ID.
	Node string `json:"node"`
	// Timestamp is when the answer was made: RFC3339, UTC.
	Timestamp string `json:"timestamp"`
	// Epoch numbers the term this participant holds, or else the last term
	// it observed: every term's epoch is greater than every earlier term's,
	// so an application can fence its writes with it. 0 while none is known
	// (no lock yet, or a term of a participant that writes no epoch). See
	// epoch.go for where it comes from.
	Epoch uint64 `json:"epoch"`
}

// Status reports the election as this participant sees it now. Leadership is
// judged at the moment of the call on the monotonic clock, not taken from a
// flag the loop sets: a process that was frozen past its renew deadline
// answers false from its first call after it resumes, before its loop has run.
func (e *Elector) Status() Status {
	now := time.Now()
	v := e.viewAt(now)
	return v.status(e.cfg.ID, now)
}

// view is the part of Status that the election decides: the rest is this
// participant's ID and the time. It is comparable, so that GET / can tell
// whether the answer it encoded last still holds.
type view struct {
	isLeader bool
	leader   string
	epoch    uint64
}

// status is the GET / answer of participant id at now.
func (v view) status(id string, now time.Time) Status {
	return Status{IsLeader: v.isLeader, Leader: v.leader, Node: id, Timestamp: timestamp(now), Epoch: v.epoch}
}

// viewAt judges the election at now, as Status does, without formatting the
// time: GET / calls it on every request.
func (e *Elector) viewAt(now time.Time) view {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isLeaderLocked(now) {
		return view{isLeader: true, leader: e.cfg.ID, epoch: e.epoch}
	}
	var v view
	if e.observed != nil {
		v.epoch = e.observed.epoch
	}
	if e.observed != nil && e.observed.object != nil && e.observed.readErr == nil &&
		e.observed.record.HolderIdentity != "" &&
		now.Before(e.observedAt.Add(e.observed.record.leaseDuration())) {
		// Possibly this participant's own ID, held by another process or an
		// earlier life of this one: is_leader says which.
		v.leader = e.observed.record.HolderIdentity
	}
	return v
}

// timestamp is Status.Timestamp for t: RFC3339 in UTC, whole seconds.
func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// IsLeader reports whether this participant leads now.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.isLeaderLocked(time.Now())
}

func (e *Elector) isLeaderLocked(now time.Time) bool {
	// An application judged unhealthy ends leadership at once, while the
	// loop may still wait on a renewal before it releases the lock.
	return e.leading && !now.Before(e.claimAt) && now.Sub(e.renewedAt) < e.cfg.RenewDeadline && e.appHealthy()
}

// Ready reports whether the election loop runs: it is what /readyz answers.
// It does not depend on the API server on purpose: the readiness of a pod's
// sidecar gates the whole pod, and an API-server outage must not take every
// elected application out of its Services. An elector that cannot reach
// the API server is not leader (is_leader says so) and counts its failed
// requests in elector_api_errors_total.
func (e *Elector) Ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running
}

// subscribe returns a channel that receives a value whenever the election's
// state may have changed, and a function that ends the subscription. A slow
// subscriber misses wake-ups, never blocks the election: it reads Status
// when it gets to it.
func (e *Elector) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.mu.Lock()
	e.subscribers[ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.subscribers, ch)
		e.mu.Unlock()
	}
}

// notify wakes every subscriber.
func (e *Elector) notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subscribers {
		poke(ch)
	}
}
