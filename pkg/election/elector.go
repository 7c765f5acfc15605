package election

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// releaseTimeout bounds the release on shutdown: the process must exit within
// a second of SIGTERM, and a release that has not landed by then is left to
// expire.
const releaseTimeout = 750 * time.Millisecond

// Elector is one participant in an election. Create it with New and start it
// with Run; Status may be called at any time from any goroutine.
type Elector struct {
	cfg     Config
	lock    *Lock
	core    rest.Interface
	log     logr.Logger
	metrics *Metrics
	labels  *podLabeler

	// changed wakes the loop when the watch observes a new version.
	changed chan struct{}

	mu sync.Mutex
	// observed is the newest version of the lock seen by any means, and
	// observedAt when its record last changed, on the monotonic clock.
	observed   *observation
	observedAt time.Time
	// leading is set while this participant holds the lock; mine is the
	// version it last wrote and renewedAt when it sent that write. It may
	// call itself leader only until renewedAt + RenewDeadline.
	leading   bool
	mine      *observation
	renewedAt time.Time
	// previous is the holder this participant last took the lock from.
	previous string
	// reachable: the API server answered at least once (lastOK), and the
	// last request failed or not (lastFailed).
	lastOK     time.Time
	lastFailed bool
	// subscribers are woken on every change of Status.
	subscribers map[chan struct{}]struct{}
}

// New validates cfg and returns an elector that talks to the API server
// through clients. metrics may be nil.
func New(cfg Config, clients *Clients, log logr.Logger, metrics *Metrics) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := NewLock(cfg.LockType, clients, cfg.Namespace, cfg.Election)
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	e := &Elector{
		cfg:         cfg,
		lock:        lock,
		core:        clients.Core,
		log:         log.WithValues("election", cfg.Election, "lock", lock.String(), "id", cfg.ID),
		metrics:     metrics,
		changed:     make(chan struct{}, 1),
		subscribers: map[chan struct{}]struct{}{},
	}
	if cfg.PodLabel != "" {
		e.labels = newPodLabeler(clients.Core, cfg.Namespace, cfg.PodLabel, e.log, metrics)
	}
	return e, nil
}

// Run takes part in the election until ctx is done. A leader then releases
// the lock, so a follower takes over at once instead of after the TTL. Run
// returns nil after a clean stop.
func (e *Elector) Run(ctx context.Context) error {
	e.log.Info("joining election", "ttl", e.cfg.TTL, "renewDeadline", e.cfg.RenewDeadline, "retryPeriod", e.cfg.RetryPeriod)
	var wg sync.WaitGroup
	wg.Go(func() { e.watchLock(ctx) })
	if e.labels != nil {
		e.labels.set(e.cfg.PodName, standby)
		wg.Go(func() { e.labels.run(ctx) })
	}
	for e.follow(ctx) {
		e.lead(ctx)
	}
	wg.Wait()
	return nil
}

// follow waits for the lock to become free and takes it. It returns true
// once this participant leads, false when ctx is done.
func (e *Elector) follow(ctx context.Context) bool {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-e.changed:
		case <-timer.C:
		}
		acquired, retryIn := e.tryAcquire(ctx)
		if acquired {
			return true
		}
		timer.Reset(retryIn)
	}
}

// tryAcquire takes the lock if it is free. Otherwise it says how long to
// wait before the lease can have expired. It makes no request while the
// lease it observed is still running.
func (e *Elector) tryAcquire(ctx context.Context) (bool, time.Duration) {
	obs, observedAt := e.snapshot()
	now := time.Now()
	if obs != nil && obs.record.HolderIdentity != "" && obs.record.HolderIdentity != e.cfg.ID {
		if expires := observedAt.Add(obs.record.LeaseDuration()); now.Before(expires) {
			// Followers all wake at expiry; a little jitter spreads their
			// attempts, and the compare-and-swap picks one.
			return false, expires.Sub(now) + jitter(e.cfg.RetryPeriod/10)
		}
	}

	rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
	defer cancel()
	if obs == nil || obs.object == nil {
		// Nothing seen yet, or the object was deleted: read it, or create it.
		got, err := e.lock.get(rctx)
		switch {
		case apierrors.IsNotFound(err) && (obs == nil || !e.held(obs, observedAt)):
			created, err := e.lock.create(rctx, e.newRecord(Record{}, now))
			return e.acquired(created, err, now, "")
		case err != nil:
			e.apiResult("get", err)
			e.log.V(1).Info("could not read the lock", "err", err.Error())
			return false, jitter(e.cfg.RetryPeriod)
		}
		e.apiResult("get", nil)
		e.observe(got)
		return false, 0
	}
	updated, err := e.lock.update(rctx, obs, e.newRecord(obs.record, now))
	return e.acquired(updated, err, now, obs.record.HolderIdentity)
}

// acquired finishes an attempt, sent at sent, to take the lock from the
// holder previous.
func (e *Elector) acquired(obs *observation, err error, sent time.Time, previous string) (bool, time.Duration) {
	if err != nil {
		e.apiResult("acquire", err)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) {
			// Someone else wrote first: read what they wrote and judge again.
			e.forget()
			return false, 0
		}
		e.log.V(1).Info("could not take the lock", "err", err.Error())
		return false, jitter(e.cfg.RetryPeriod)
	}
	e.apiResult("acquire", nil)
	e.observe(obs)
	e.mu.Lock()
	e.leading, e.mine, e.renewedAt, e.previous = true, obs, sent, previous
	e.mu.Unlock()
	e.metrics.renewed(time.Now())
	return true, 0
}

// newRecord is the record this participant writes to take the lock over
// prev.
func (e *Elector) newRecord(prev Record, now time.Time) Record {
	rec := Record{
		HolderIdentity:       e.cfg.ID,
		LeaseDurationSeconds: int(e.cfg.TTL / time.Second),
		AcquireTime:          metav1.NewTime(now),
		RenewTime:            metav1.NewTime(now),
		LeaderTransitions:    prev.LeaderTransitions + 1,
	}
	if prev.HolderIdentity == e.cfg.ID {
		// Taking back our own lease (after a restart, or after stepping down
		// while the API server was away) is a renewal, not a transition.
		rec.AcquireTime, rec.LeaderTransitions = prev.AcquireTime, prev.LeaderTransitions
	}
	return rec
}

// lead renews the lock every retry period until ctx is done (then it
// releases it) or a renewal fails past the renew deadline (then it steps
// down).
func (e *Elector) lead(ctx context.Context) {
	e.log.Info("became leader")
	e.metrics.leading(true)
	e.notify()
	e.event("LeaderElection", e.cfg.ID+" became leader")
	if e.labels != nil {
		// Demote the pod this leader took over from first (its ID is its
		// pod name by default): it may not have managed to itself.
		e.mu.Lock()
		previous := e.previous
		e.mu.Unlock()
		if previous != "" && previous != e.cfg.PodName {
			e.labels.set(previous, standby)
		}
		e.labels.set(e.cfg.PodName, leader)
	}

	next := time.NewTimer(e.cfg.RetryPeriod)
	defer next.Stop()
	for {
		e.mu.Lock()
		deadline := e.renewedAt.Add(e.cfg.RenewDeadline)
		e.mu.Unlock()
		stepDown := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			stepDown.Stop()
			e.release()
			return
		case <-stepDown.C:
			e.stepDown("could not renew the lease within the renew deadline")
			return
		case <-e.changed:
			// A version written by someone else may have arrived. Renew now:
			// if the lock really changed, the compare-and-swap tells.
			if obs, _ := e.snapshot(); obs == nil || obs.record.HolderIdentity == e.cfg.ID {
				stepDown.Stop()
				continue
			}
		case <-next.C:
		}
		stepDown.Stop()
		retryIn, lost := e.renew(ctx, deadline)
		if lost != "" {
			e.stepDown(lost)
			return
		}
		next.Reset(retryIn)
	}
}

// renew writes a new renew time over the version this leader last wrote. It
// returns when to renew next, or why leadership is lost.
func (e *Elector) renew(ctx context.Context, deadline time.Time) (time.Duration, string) {
	e.mu.Lock()
	mine := e.mine
	e.mu.Unlock()
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	sent := time.Now()
	rec := mine.record
	rec.RenewTime = metav1.NewTime(sent)
	rec.LeaseDurationSeconds = int(e.cfg.TTL / time.Second)
	obs, err := e.lock.update(rctx, mine, rec)
	e.metrics.renewLatency(time.Since(sent), err)
	if apierrors.IsConflict(err) {
		// The object changed under us. If we still hold it (someone touched
		// a label, say), renew over the new version; if not, we lost it.
		got, gerr := e.lock.get(rctx)
		if gerr != nil {
			e.apiResult("get", gerr)
			return e.cfg.RetryPeriod / 2, ""
		}
		e.observe(got)
		if got.record.HolderIdentity != e.cfg.ID {
			return 0, "the lock was taken by " + got.record.HolderIdentity
		}
		e.mu.Lock()
		e.mine = got
		e.mu.Unlock()
		return 0, ""
	}
	if apierrors.IsNotFound(err) {
		return 0, "the lock object was deleted"
	}
	if err != nil {
		e.apiResult("renew", err)
		e.log.V(1).Info("renewal failed", "err", err.Error(), "stepDownIn", time.Until(deadline).Round(time.Millisecond))
		return e.cfg.RetryPeriod / 2, ""
	}
	e.apiResult("renew", nil)
	e.observe(obs)
	e.mu.Lock()
	e.mine, e.renewedAt = obs, sent
	e.mu.Unlock()
	e.metrics.renewed(time.Now())
	return e.cfg.RetryPeriod, ""
}

// stepDown stops leading at once; the loop then rejoins as a follower.
func (e *Elector) stepDown(reason string) {
	e.mu.Lock()
	e.leading = false
	e.mu.Unlock()
	e.log.Info("stopped leading", "reason", reason)
	e.metrics.leading(false)
	e.notify()
	e.event("LeaderElection", e.cfg.ID+" stopped leading: "+reason)
	if e.labels != nil {
		e.labels.keepOnly(e.cfg.PodName)
		e.labels.set(e.cfg.PodName, standby)
	}
}

// release gives the lock up on shutdown: it stops calling itself leader
// first, then writes a record with no holder, which every follower's watch
// sees at once.
func (e *Elector) release() {
	e.mu.Lock()
	e.leading = false
	mine := e.mine
	e.mu.Unlock()
	e.metrics.leading(false)
	e.notify()

	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	now := metav1.NewTime(time.Now())
	rec := Record{
		// A holder-less record with a one-second lease: what client-go
		// writes, so older participants read it as released too.
		LeaseDurationSeconds: 1,
		AcquireTime:          now,
		RenewTime:            now,
		LeaderTransitions:    mine.record.LeaderTransitions,
	}
	if e.labels != nil {
		// The labeler's loop has stopped with ctx; the label is set here,
		// beside the release, so a Service stops sending to this pod.
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { e.labels.patch(ctx, e.cfg.PodName, standby) })
	}
	_, err := e.lock.update(ctx, mine, rec)
	if apierrors.IsConflict(err) {
		var got *observation
		if got, err = e.lock.get(ctx); err == nil && got.record.HolderIdentity == e.cfg.ID {
			_, err = e.lock.update(ctx, got, rec)
		}
	}
	if err != nil {
		e.log.Error(err, "could not release the lock; the others take over when the lease expires")
		return
	}
	e.log.Info("released the lock")
	e.eventSync(ctx, "LeaderElection", e.cfg.ID+" stopped leading: shutting down")
}

// observe records a version of the lock. observedAt moves only when the
// record changes: that is the moment a lease is timed from.
func (e *Elector) observe(obs *observation) {
	e.mu.Lock()
	prev := e.observed
	changed := prev == nil || !prev.record.equal(obs.record)
	if changed {
		e.observedAt = time.Now()
	}
	e.observed = obs
	e.mu.Unlock()
	if changed {
		if prev == nil || prev.record.HolderIdentity != obs.record.HolderIdentity {
			e.metrics.holderChanged()
		}
		e.wake()
		e.notify()
	}
}

// observeDeleted records that the lock object is gone. The last holder's
// lease still runs its course, so a leader that has not seen the deletion
// yet is not joined by a second.
func (e *Elector) observeDeleted() {
	e.mu.Lock()
	if e.observed != nil && e.observed.object != nil {
		e.observed = &observation{record: e.observed.record}
		e.observedAt = time.Now()
	}
	e.mu.Unlock()
	e.wake()
	e.notify()
}

// forget drops what was observed, so the next attempt reads the lock first.
func (e *Elector) forget() {
	e.mu.Lock()
	e.observed = nil
	e.mu.Unlock()
}

func (e *Elector) snapshot() (*observation, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.observed, e.observedAt
}

// held reports whether obs names a holder whose lease has not run out.
func (e *Elector) held(obs *observation, observedAt time.Time) bool {
	return obs.record.HolderIdentity != "" && time.Now().Before(observedAt.Add(obs.record.LeaseDuration()))
}

// wake tells the loop that something changed; it never blocks.
func (e *Elector) wake() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// apiResult keeps the readiness state and the error metric.
func (e *Elector) apiResult(op string, err error) {
	e.mu.Lock()
	if err == nil {
		e.lastOK, e.lastFailed = time.Now(), false
	} else {
		e.lastFailed = true
	}
	e.mu.Unlock()
	if err != nil {
		e.metrics.apiError(op)
	}
}

// jitter is a random duration in [d, 1.2d): participants that woke together
// spread out.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}
