package election

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
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
//
// Four rules keep two participants from leading at once, whatever the API
// server, the network or the other participants do:
//   - A follower times a lease from its own observation of the last change
//     of the record, on its monotonic clock, and waits at least its own TTL
//     (or the record's lease, if longer) before it takes the lock with a
//     compare-and-swap.
//   - A participant that makes a missing lock object does not call itself
//     leader until a full TTL after the create was answered. A create has no
//     precondition: it lands whenever the object is missing, even long after
//     it was sent, and a leader cut off from the API server may still
//     believe it holds the object that was deleted; its belief ends a renew
//     deadline after its last write, which came before the deletion.
//   - A leader calls itself leader only until RenewDeadline after it sent
//     its last successful write, and every write it sends changes the
//     record at RecordPrecision, so that every follower sees it as a change
//     and restarts its timer no earlier than the leader restarted its own.
//   - A participant that finds in the lock a record it sent to take the
//     lock, whose answer it lost, takes that version with a compare-and-swap
//     and calls itself leader only RenewDeadline after it saw it (a TTL for
//     a lock it made): another process with its ID that wrote an equal
//     record has stopped calling itself leader by then (see adopt).
type Elector struct {
	cfg     Config
	lock    *recordLock
	core    rest.Interface
	log     logr.Logger
	metrics *Metrics
	labels  *podLabeler
	// service keeps the -leader-service endpoints; nil without it.
	service *leaderService

	// changed wakes the loop when the watch observes a new version.
	changed chan struct{}

	mu sync.Mutex
	// observed is the newest version of the lock seen by any means, and
	// observedAt when its record last changed, on the monotonic clock. An
	// observation without an object means the lock is missing.
	observed   *observation
	observedAt time.Time
	// leading is set while this participant holds the lock; mine is the
	// version it last wrote and renewedAt when it sent that write. It may
	// call itself leader only from claimAt (a TTL after it made the lock
	// object; zero when it took an existing one) until renewedAt +
	// RenewDeadline.
	leading   bool
	mine      *observation
	renewedAt time.Time
	claimAt   time.Time
	// epoch is the epoch of the term this participant holds or last held
	// (see epoch.go); 0 until a leader that made the lock renews it.
	epoch uint64
	// unconfirmed are the writes this participant sent since its last
	// confirmed one whose outcome it does not know (the request timed out,
	// say): finding one of their records in the lock is finding its own
	// write, not another process with its ID. A write the API server
	// refused is dropped from them.
	unconfirmed []sentWrite
	// previousPod is the pod of the holder this participant last took the
	// lock from, to be labelled standby.
	previousPod string
	// overtaken is the version this participant last tried to take the
	// lock over when another participant wrote first: it is stale, and is
	// read again unless a newer one is seen.
	overtaken *observation
	// running is set while Run runs; it is what /readyz reports.
	running bool
	// subscribers are woken on every change of Status.
	subscribers map[chan struct{}]struct{}

	// loopRand and watchRand draw this participant's jitter: one source
	// per goroutine, so that a seeded participant (the simulation seeds
	// them from its schedule) draws the same numbers in every run.
	loopRand  *rand.Rand
	watchRand *rand.Rand
	// spread is how long after the lease of spreadOf has run out this
	// follower tries to take the lock; drawn once for each version, the
	// loop may wake many times while it waits.
	spread   time.Duration
	spreadOf *observation

	// self is this participant as a successor: it joined when New made it.
	self candidate
	// recordAt is when the observed record last changed (not on the first
	// observation): a holder seen renewing lately is alive.
	recordAt time.Time
	// proposed is the version this follower last named itself successor
	// on; it proposes nothing before proposeOffUntil, set when the API
	// server refused a proposal.
	// proposeIn is how long after the renewal seen at proposeFor it
	// proposes, drawn once for it.
	proposed        *observation
	proposeOffUntil time.Time
	proposeFor      time.Time
	proposeIn       time.Duration
	// healthyAgain counts the application's returns to health, for
	// -notify-url to tell it the state again (see feed).
	healthyAgain uint64

	// health probes the application; nil without AppHealthURL.
	health *appHealth
}

// New validates cfg and returns an elector that talks to the API server
// through clients. metrics may be nil.
func New(cfg Config, clients *Clients, log logr.Logger, metrics *Metrics) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := newRecordLock(cfg.LockType, clients, cfg.Namespace, cfg.Election)
	if err != nil {
		return nil, err
	}
	if cfg.PodLabel != "" {
		lock.holderPod = cfg.PodName
	}
	log = log.WithValues("election", cfg.Election, "lock", lock.String(), "id", cfg.ID)
	lock.onNoEpoch = func(err error) {
		log.Info("the lock's admission policy refuses the epoch annotation "+AnnotationEpoch+"; writing the lock without it: "+
			"apply the policies of this release (config/default) for followers to learn the epoch", "err", err.Error())
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	metrics.describe(cfg.Election, cfg.ID, lock.String())
	e := &Elector{
		cfg:         cfg,
		lock:        lock,
		core:        clients.Core,
		log:         log,
		metrics:     metrics,
		changed:     make(chan struct{}, 1),
		subscribers: map[chan struct{}]struct{}{},
		self:        candidate{joined: time.Now().UnixMilli(), id: cfg.ID},
	}
	e.seed(uint64(time.Now().UnixNano()))
	if cfg.AppHealthURL != "" {
		if cfg.AppHealthPeriod == 0 {
			cfg.AppHealthPeriod = DefaultAppHealthPeriod
		}
		if cfg.AppHealthThreshold == 0 {
			cfg.AppHealthThreshold = DefaultAppHealthThreshold
		}
		e.cfg = cfg
		e.health = newAppHealth(cfg, e.appHealthChanged, func(err error) {
			e.log.Info("the application is still unhealthy; not leading", "url", cfg.AppHealthURL, "err", err.Error())
		})
		metrics.appHealth(false)
	}
	if cfg.PodLabel != "" || cfg.PodDeletionCost {
		e.labels = newPodLabeler(clients.Core, cfg.Namespace, cfg.PodLabel, cfg.PodDeletionCost, cfg.PodName, e.log, metrics)
	}
	if cfg.LeaderService != "" {
		e.service = newLeaderService(clients, cfg, func() (bool, uint64) {
			v := e.viewAt(time.Now())
			return v.isLeader, v.epoch
		}, e.log, metrics)
	}
	return e, nil
}

// Run takes part in the election until ctx is done. A leader then releases
// the lock, so a follower takes over at once instead of after the TTL. Run
// returns nil after a clean stop.
func (e *Elector) Run(ctx context.Context) error {
	e.log.Info("joining election", "ttl", e.cfg.TTL, "renewDeadline", e.cfg.RenewDeadline, "retryPeriod", e.cfg.RetryPeriod)
	if e.health != nil {
		e.log.Info("leading only while the application is healthy",
			"url", e.cfg.AppHealthURL, "period", e.cfg.AppHealthPeriod, "threshold", e.cfg.AppHealthThreshold)
	}
	e.setRunning(true)
	defer e.setRunning(false)
	// Stopped as Run returns, after the release: the application is told
	// the last state, is_leader: false.
	defer e.startNotifier(ctx)()
	var wg sync.WaitGroup
	wg.Go(func() { e.watchLock(ctx) })
	if e.health != nil {
		wg.Go(func() { e.health.run(ctx) })
	}
	if e.labels != nil {
		e.labels.set(e.cfg.PodName, standby)
		wg.Go(func() { e.labels.run(ctx) })
	}
	if e.service != nil {
		// A pod listed by a term this process does not remember (before
		// a restart of its container) leaves the Service.
		e.service.withdraw()
		wg.Go(func() { e.service.run(ctx) })
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
		if ctx.Err() != nil {
			// ctx ended on the instant of another wake-up.
			return false
		}
		// The attempt judges the newest state, so a wake-up that came on
		// the instant of the one taken is spent with it: which of the two
		// the select took must not decide how many attempts are made.
		select {
		case <-e.changed:
		default:
		}
		acquired, retryIn := e.tryAcquire(ctx)
		if acquired {
			return true
		}
		timer.Reset(retryIn)
	}
}

// tryAcquire takes the lock if it is free. Otherwise it says how long to
// wait before the lease can have expired. It makes no request to take the
// lock while the lease it observed is still running; meanwhile it may name
// itself successor (see propose).
func (e *Elector) tryAcquire(ctx context.Context) (bool, time.Duration) {
	if !e.appHealthy() {
		// It takes nothing until its application answers healthy, which
		// wakes the loop.
		return false, e.cfg.RetryPeriod
	}
	now := time.Now()
	// One snapshot for every judgement below: the watch may observe a new
	// version at any moment, and the version written over must be the one
	// whose lease was judged. Written over a newer version, the
	// compare-and-swap would succeed and take a lease just begun.
	obs, observedAt := e.snapshot()
	stale := obs == nil || e.wasOvertaken(obs)
	if !stale {
		if w, ok := e.ownWrite(obs); ok {
			return e.adopt(ctx, obs, observedAt, w)
		}
		if wait := e.leaseLeft(obs, observedAt, now); wait > 0 {
			if in := e.propose(ctx, obs, now); in > 0 && in < wait {
				return false, in
			}
			// Followers all wake at expiry; a little jitter spreads their
			// attempts, and the compare-and-swap picks one.
			return false, wait + e.spreadFor(e.cfg.RetryPeriod/10)
		}
		if wait := e.yieldLeft(obs, observedAt, now); wait > 0 {
			return false, wait
		}
	}

	rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
	defer cancel()
	switch {
	case stale:
		// Nothing seen yet, or only the version another participant has
		// written over since: read the lock first.
		if err := e.read(rctx); err != nil {
			e.log.V(1).Info("could not read the lock", "err", err.Error())
			return false, jitter(e.loopRand, e.cfg.RetryPeriod)
		}
		e.mu.Lock()
		e.overtaken = nil
		e.mu.Unlock()
		return false, 0
	case obs.object == nil:
		rec := e.newRecord(Record{}, now, true)
		w := sentWrite{record: rec, create: true, over: obs}
		e.sent(w)
		created, err := e.lock.create(rctx, rec)
		return e.acquired(rctx, w, created, err, now, time.Time{})
	default:
		w := sentWrite{record: e.newRecord(obs.record, now, false), previousPod: e.lock.holderPodOf(obs), over: obs, epoch: versionEpoch(obs.object)}
		e.sent(w)
		updated, err := e.lock.update(rctx, obs, w.record, w.epoch)
		return e.acquired(rctx, w, updated, err, now, time.Time{})
	}
}

// adopt takes as its own a version of the lock that holds a record this
// participant wrote to take the lock, whose answer it never got (the write
// landed, the answer was lost). Without it, it would wait out its own lease
// like another process's, and no one would lead for a TTL or more.
//
// It cannot tell its write from an equal one by another process with its
// ID, so it claims the version the way it takes any lock, with a
// compare-and-swap of a renewal, and calls itself leader only a renew
// deadline after it saw that version (a TTL for a lock it made): if the
// version was the other process's, that process sent it before it was seen
// and its renewals over it now fail, so it has stopped calling itself
// leader by then.
func (e *Elector) adopt(ctx context.Context, obs *observation, observedAt time.Time, w sentWrite) (bool, time.Duration) {
	now := time.Now()
	renewTime, wait := nextRenewTime(obs.record.RenewTime.Time, now, now.Sub(observedAt))
	if wait > 0 {
		return false, wait
	}
	rec := obs.record
	rec.RenewTime = recordTime(renewTime)
	rec.LeaseDurationSeconds = int(e.cfg.TTL / time.Second)
	claimAt := observedAt.Add(e.cfg.RenewDeadline)
	if w.create {
		claimAt = observedAt.Add(e.cfg.TTL)
	}
	// A renewal of a term that made the lock keeps that term's claim: a
	// full TTL after the lock was made.
	claimAt = later(claimAt, w.claimAt)
	e.log.Info("found its own write in the lock, whose answer was lost; taking it", "leadingIn", time.Until(claimAt).Round(time.Millisecond))
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
	defer cancel()
	// A term of its own, numbered after the version it takes: that may be
	// another process's with its ID, which has an epoch of its own.
	w.record, w.epoch, w.over = rec, versionEpoch(obs.object), obs
	e.sent(w)
	updated, err := e.lock.update(rctx, obs, rec, w.epoch)
	return e.acquired(rctx, w, updated, err, now, claimAt)
}

// ownWrite is the unconfirmed write of this participant whose record obs
// holds, if any.
func (e *Elector) ownWrite(obs *observation) (sentWrite, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if obs == nil || obs.object == nil || obs.readErr != nil || obs.record.HolderIdentity != e.cfg.ID {
		return sentWrite{}, false
	}
	i := slices.IndexFunc(e.unconfirmed, func(w sentWrite) bool { return w.record.equal(obs.record) })
	if i < 0 {
		return sentWrite{}, false
	}
	return e.unconfirmed[i], true
}

// wasOvertaken reports whether obs is the version another participant wrote
// over while this one tried to take the lock.
func (e *Elector) wasOvertaken(obs *observation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.overtaken != nil && e.overtaken.sameVersion(obs)
}

// read gets the lock and observes what it finds, the object or its absence.
func (e *Elector) read(ctx context.Context) error {
	sent := time.Now()
	got, err := e.lock.get(ctx)
	switch {
	case apierrors.IsNotFound(err):
		e.observeRead(nil, sent)
		return nil
	case err != nil:
		e.apiResult("get", err)
		return err
	}
	e.observeRead(got, sent)
	return nil
}

// leaseLeft is how long this participant must still wait before it may
// take the lock over obs, observed at observedAt: until the lease of the
// holder it names has run out.
func (e *Elector) leaseLeft(obs *observation, observedAt, now time.Time) time.Duration {
	switch {
	case obs == nil || obs.object == nil:
		// Nothing seen yet (read it now), or missing (make it now, and lead
		// a TTL later: see acquired).
		return 0
	case obs.record.HolderIdentity == "" && obs.readErr == nil:
		return 0
	default:
		// A holder with this participant's own ID that it did not write
		// (it is not leading) is another process, or an earlier life of
		// this one: its lease runs its course like any other.
		return observedAt.Add(e.holdFor(obs.record)).Sub(now)
	}
}

// holdFor is how long a record holds the lock from when it was observed:
// its own lease, but never less than this participant's TTL, so that a
// record with a short or garbled lease does not let anyone in early.
func (e *Elector) holdFor(rec Record) time.Duration {
	return max(rec.leaseDuration(), e.cfg.TTL)
}

// acquired finishes the write w, sent at sent, that takes the lock. After a
// success this participant may call itself leader from claimAt; when that
// is zero, at once, or a TTL after the answer for a lock it made.
func (e *Elector) acquired(ctx context.Context, w sentWrite, obs *observation, err error, sent, claimAt time.Time) (bool, time.Duration) {
	if err != nil {
		e.apiResult("acquire", err)
		if refused(err) {
			e.forget(w.record)
		}
		switch {
		case apierrors.IsNotFound(err):
			e.observeAbsent()
			return false, 0
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// Someone else wrote first. The watch brings what they wrote
			// in a moment; reading it now as well would add a request per
			// losing follower at the instant the API server answers the
			// winner. Judge again when a newer version is seen, or read
			// it after a short wait if none comes (no watch, say).
			e.mu.Lock()
			e.overtaken = w.over
			e.mu.Unlock()
			return false, e.cfg.RetryPeriod / 4
		}
		e.log.V(1).Info("could not take the lock", "err", err.Error())
		return false, jitter(e.loopRand, e.cfg.RetryPeriod)
	}
	e.apiResult("acquire", nil)
	e.observe(obs)
	if claimAt.IsZero() && w.create {
		claimAt = time.Now().Add(e.cfg.TTL)
	}
	e.mu.Lock()
	e.claimAt, e.epoch = claimAt, w.epoch
	e.leading, e.mine, e.renewedAt, e.previousPod = true, obs, sent, w.previousPod
	e.unconfirmed = e.unconfirmed[:0]
	e.mu.Unlock()
	e.metrics.renewed(time.Now())
	return true, 0
}

// newRecord is the record this participant writes to take the lock over
// prev (create: to make a missing lock).
func (e *Elector) newRecord(prev Record, now time.Time, create bool) Record {
	rec := Record{
		HolderIdentity:       e.cfg.ID,
		LeaseDurationSeconds: int(e.cfg.TTL / time.Second),
		AcquireTime:          recordTime(now),
		RenewTime:            recordTime(now),
		LeaderTransitions:    prev.LeaderTransitions + 1,
	}
	if create {
		// client-go counts from 0 on a new lock.
		rec.LeaderTransitions = 0
	}
	if prev.HolderIdentity == e.cfg.ID {
		// Taking back a lease with our own ID (after a restart) is not a
		// transition; the renew time must still move on by a whole second,
		// or followers would not see the write.
		rec.AcquireTime, rec.LeaderTransitions = prev.AcquireTime, prev.LeaderTransitions
		if next := prev.RenewTime.Add(RecordPrecision); now.Before(next) {
			rec.RenewTime = recordTime(next)
		}
	}
	return rec
}

// lead renews the lock every retry period until ctx is done or its
// application turns unhealthy (then it releases it), a renewal fails past
// the renew deadline, or the lock is seen to be lost (then it steps down).
//
// Every wake-up (a timer, a new version of the lock, ctx) judges all that
// may be due, from the clock and the state, in one order: a shutdown, the
// application's health, the renew deadline, a lost lock, the claim, the
// renewal. Which wake-up came
// first never matters, so a seeded participant does the same in every run
// even when two of them fall on one instant.
func (e *Elector) lead(ctx context.Context) {
	e.mu.Lock()
	claimAt := e.claimAt
	e.mu.Unlock()
	claimed := false
	if claimIn := time.Until(claimAt); claimIn > 0 {
		// It made the lock object: it holds and renews it, but says it
		// leads only once any leader of a deleted lock has stopped.
		e.log.Info("made the lock; leading once a full lease has passed", "in", claimIn.Round(time.Millisecond))
	}

	renewAt := time.Now().Add(e.cfg.RetryPeriod)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		e.mu.Lock()
		deadline := e.renewedAt.Add(e.cfg.RenewDeadline)
		e.mu.Unlock()
		if ctx.Err() != nil {
			e.release("shutting down", true)
			return
		}
		if !e.appHealthy() {
			e.release("its application is unhealthy", false)
			return
		}
		if !now.Before(deadline) {
			e.stepDown("could not renew the lease within the renew deadline")
			return
		}
		// Stepping down is always safe: do it as soon as a version that is
		// not ours is seen, without waiting for the next renewal.
		if lost := e.lostByObservation(); lost != "" {
			e.stepDown(lost)
			return
		}
		if !claimed && !now.Before(claimAt) {
			claimed = true
			e.announce()
		}
		if !now.Before(renewAt) {
			retryIn, lost := e.renew(ctx, deadline)
			if lost != "" {
				e.stepDown(lost)
				return
			}
			renewAt = time.Now().Add(retryIn)
			continue
		}

		wake := deadline
		if renewAt.Before(wake) {
			wake = renewAt
		}
		if !claimed && claimAt.Before(wake) {
			wake = claimAt
		}
		timer.Reset(wake.Sub(now))
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-e.changed:
		}
	}
}

// announce tells that this participant leads: logs, metrics, watchers,
// an Event and the pod labels. Status itself needs no telling: it judges
// leadership at the moment it is asked.
func (e *Elector) announce() {
	e.log.Info("became leader")
	e.metrics.leading(true)
	e.notify()
	e.event(eventNormal, "LeaderElection", e.cfg.ID+" became leader")
	if e.labels != nil {
		// Demote the pod this leader took over from first (it may not have
		// managed to itself), then promote its own: the labeler writes in
		// that order, so no two pods carry the leader label.
		e.mu.Lock()
		previous := e.previousPod
		e.mu.Unlock()
		if previous != "" && previous != e.cfg.PodName {
			e.labels.set(previous, standby)
		}
		e.labels.set(e.cfg.PodName, leader)
	}
	if e.service != nil {
		e.service.publish()
	}
}

// lostByObservation says why the newest observed version of the lock
// shows that this leader lost it, or "" when it does not.
func (e *Elector) lostByObservation() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	obs := e.observed
	switch {
	case obs == nil:
		return ""
	case obs.object == nil:
		return "the lock object was deleted"
	case obs.readErr != nil:
		return "the lock was overwritten with a record that cannot be read"
	case obs.record.HolderIdentity != e.cfg.ID:
		return "the lock was taken by " + holderName(obs.record.HolderIdentity)
	case !obs.record.equal(e.mine.record) && !e.wasSentLocked(obs.record):
		return e.duplicateLocked()
	}
	return ""
}

// renew writes a new renew time over the version this leader last wrote. It
// returns when to renew next, or why leadership is lost.
func (e *Elector) renew(ctx context.Context, deadline time.Time) (time.Duration, string) {
	now := time.Now()
	e.mu.Lock()
	mine, sinceWrite, epoch, claimAt := e.mine, now.Sub(e.renewedAt), e.epoch, e.claimAt
	e.mu.Unlock()
	if epoch == 0 {
		// It made the lock object: its term is numbered after the object
		// it made (see epoch.go), and says so from its first renewal, long
		// before it may call itself leader.
		epoch = versionEpoch(mine.object)
	}

	renewTime, wait := nextRenewTime(mine.record.RenewTime.Time, now, sinceWrite)
	if wait > 0 {
		// The renewal would land in the same second as the last one, and a
		// follower that compares whole seconds would not see it: send it
		// once it will be seen.
		return wait, ""
	}
	rec := mine.record
	rec.RenewTime = recordTime(renewTime)
	rec.LeaseDurationSeconds = int(e.cfg.TTL / time.Second)

	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	e.sent(sentWrite{record: rec, epoch: epoch, claimAt: claimAt})
	obs, err := e.lock.update(rctx, mine, rec, epoch)
	e.metrics.renewLatency(time.Since(now), err)
	if refused(err) {
		// Not written: finding an equal record in the lock now is finding
		// another process's.
		e.forget(rec)
	}
	switch {
	case apierrors.IsConflict(err):
		// The object changed under us: a label on it, a write of ours whose
		// answer was lost, another holder, or another process with our ID.
		// Judge the newest version seen: the read, or what the watch
		// brought while it was under way.
		if gerr := e.read(rctx); gerr != nil {
			return e.cfg.RetryPeriod / 2, ""
		}
		if lost := e.lostByObservation(); lost != "" {
			return 0, lost
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if !e.observed.record.equal(e.mine.record) {
			// A record equal to one of ours whose answer was lost: ours,
			// or another process with our ID that took the lock over with
			// an equal record and will lead a renew deadline after it saw
			// it. Renewing over it would keep this process leading
			// alongside that one, so step down, and take the lock back as
			// a follower does, a renew deadline later.
			return 0, "the lock holds a record of this ID whose answer was lost, which another process with this ID may have written"
		}
		// Still ours (the object changed, the record did not): renew over
		// the new version. renewedAt stays at the last write known to
		// have landed.
		e.mine = e.observed
		return 0, ""
	case apierrors.IsNotFound(err):
		e.observeAbsent()
		return 0, "the lock object was deleted"
	case err != nil:
		e.apiResult("renew", err)
		e.log.V(1).Info("renewal failed", "err", err.Error(), "stepDownIn", time.Until(deadline).Round(time.Millisecond))
		return e.cfg.RetryPeriod / 2, ""
	}
	e.apiResult("renew", nil)
	e.observe(obs)
	e.mu.Lock()
	e.mine, e.renewedAt, e.epoch = obs, now, epoch
	e.unconfirmed = e.unconfirmed[:0]
	e.mu.Unlock()
	// observe woke the subscribers before renewedAt moved: a renewal
	// answered at the renew deadline would leave them with the lapse.
	e.notify()
	e.metrics.renewed(time.Now())
	return e.cfg.RetryPeriod, ""
}

// nextRenewTime is the renew time of a renewal at now, after one with the
// renew time last that was sent sinceWrite ago; or, when that renewal would
// fall in the same second as the last one, how long to wait first. Renew
// times always move on by a whole second, even when the wall clock was set
// back: then the record runs ahead of the clock, by at most the step.
func nextRenewTime(last, now time.Time, sinceWrite time.Duration) (time.Time, time.Duration) {
	switch {
	case now.Unix() > last.Unix():
		return now, 0
	case sinceWrite >= RecordPrecision:
		return time.Unix(last.Unix()+1, 0), 0
	}
	// A few milliseconds past the boundary, so that the renewal is not sent
	// a hair before it.
	const margin = 5 * time.Millisecond
	toNextSecond := now.Truncate(time.Second).Add(time.Second).Sub(now)
	return time.Time{}, min(toNextSecond, RecordPrecision-sinceWrite) + margin
}

// recordTime is t as this participant writes it into a record: in whole
// seconds, what every lock type stores, so that a record read back equals
// the one written, exactly.
func recordTime(t time.Time) metav1.Time {
	return metav1.NewTime(t.Truncate(RecordPrecision))
}

// duplicateLocked reports another process writing this participant's ID
// into the lock, and returns the reason to step down. e.mu is held.
func (e *Elector) duplicateLocked() string {
	e.metrics.duplicateID()
	msg := "another process renews the lock with this participant's ID " + strconv.Quote(e.cfg.ID) +
		"; give every participant its own -" + FlagID
	e.eventOn(e.observed, eventWarning, "DuplicateID", msg)
	return msg
}

// holderName is a holder ID for messages.
func holderName(id string) string {
	if id == "" {
		return "nobody (released)"
	}
	return strconv.Quote(id)
}

// sentWrite is a write of the lock this participant sent as its holder.
type sentWrite struct {
	record Record
	// create is set for a write that made the lock object, or took over a
	// version that such a write made.
	create bool
	// previousPod is the pod of the holder a write to take the lock took
	// it from.
	previousPod string
	// over is the version a write to take the lock was sent over.
	over *observation
	// epoch is the epoch the write gives its term: 0 for one that made
	// the lock object, whose term is numbered at its first renewal.
	epoch uint64
	// claimAt is when the term of a renewal may call itself leader at the
	// earliest (zero: from the start).
	claimAt time.Time
}

// later is the later of two instants.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// sent remembers a write before it is sent, until a write is confirmed.
func (e *Elector) sent(w sentWrite) {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A handful is enough: every confirmed write clears them.
	if len(e.unconfirmed) >= 16 {
		e.unconfirmed = e.unconfirmed[1:]
	}
	e.unconfirmed = append(e.unconfirmed, w)
}

// forget drops the write of rec that was sent last, which the API server
// refused. An earlier write of an equal record (a renewal in the same
// second as one whose answer was lost) stays: its outcome is unknown.
func (e *Elector) forget(rec Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.unconfirmed) - 1; i >= 0; i-- {
		if e.unconfirmed[i].record.equal(rec) {
			e.unconfirmed = slices.Delete(e.unconfirmed, i, i+1)
			return
		}
	}
}

// refused reports an answer that says the write was not made: the
// compare-and-swap failed, or the request was turned away as it stood.
// Any other error (a timeout, a lost connection) leaves the write's
// outcome unknown.
func refused(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) ||
		apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}

// wasSentLocked reports whether rec is one this participant sent and has
// not seen confirmed. e.mu is held.
func (e *Elector) wasSentLocked(rec Record) bool {
	return slices.ContainsFunc(e.unconfirmed, func(w sentWrite) bool { return w.record.equal(rec) })
}

// stepDown stops leading at once; the loop then rejoins as a follower.
func (e *Elector) stepDown(reason string) {
	e.mu.Lock()
	e.leading = false
	e.mu.Unlock()
	e.log.Info("stopped leading", "reason", reason)
	e.metrics.leading(false)
	e.notify()
	e.event(eventNormal, "LeaderElection", e.cfg.ID+" stopped leading: "+reason)
	if e.labels != nil {
		e.labels.keepOnly(e.cfg.PodName)
		e.labels.set(e.cfg.PodName, standby)
	}
	if e.service != nil {
		e.service.withdraw()
	}
}

// release gives the lock up, on shutdown or when its application is
// unhealthy: it stops calling itself leader first, labels its pod standby,
// then writes a record with no holder, which every follower's watch sees at
// once. On shutdown, it waits for the Event that says so: the process ends
// next.
func (e *Elector) release(reason string, shutdown bool) {
	e.mu.Lock()
	e.leading = false
	mine, epoch := e.mine, e.epoch
	claimed := !time.Now().Before(e.claimAt)
	e.mu.Unlock()
	e.metrics.leading(false)
	e.notify()
	if !claimed {
		// It made the lock and has not yet waited out the lease of a
		// leader the lock may have had before: a release would let a
		// follower in at once, beside that leader. Its own lease runs out
		// instead.
		e.log.Info("not releasing the lock made less than a lease ago; the others take over when it expires")
		if e.service != nil {
			// Listed by an earlier term, whose withdrawal may still be
			// pending: it is this process's last chance.
			ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout/2)
			defer cancel()
			_ = e.service.withdrawNow(ctx)
		}
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	// The pod label and the Service's endpoint go before the release, not
	// beside it: the next leader writes its own as soon as it has the
	// lock, and two pods must not carry the leader label, nor the Service
	// send to a pod that no longer leads. They get half the time, side by
	// side. A label that fails is the next leader's to fix: it demotes
	// this pod before promoting its own. An address that fails to leave
	// keeps the lock: the release would hand over to a new leader while
	// the Service sends to this pod.
	wctx, wcancel := context.WithTimeout(ctx, releaseTimeout/2)
	var before sync.WaitGroup
	var withdrawn error
	if e.service != nil {
		before.Go(func() { withdrawn = e.service.withdrawNow(wctx) })
	}
	switch {
	case e.labels != nil && e.cfg.PodLabel != "":
		before.Go(func() { _ = e.labels.patch(wctx, e.cfg.PodName, standby) })
	case e.labels != nil && !shutdown:
		// Only the deletion cost, which may wait: the handover does not.
		// A pod that shuts down keeps it; it is on its way out.
		defer e.labels.set(e.cfg.PodName, standby)
	}
	before.Wait()
	wcancel()
	if withdrawn != nil {
		// Released, the lock would let the next leader in while the
		// Service still sends to this pod.
		e.log.Error(withdrawn, "not releasing the lock: the pod's address could not be taken out of the Service; "+
			"the others take over when the lease expires, and the next leader replaces the address")
		return
	}
	now := recordTime(time.Now())
	rec := Record{
		// A holder-less record with a one-second lease: what client-go
		// writes, so older participants read it as released too.
		LeaseDurationSeconds: 1,
		AcquireTime:          now,
		RenewTime:            now,
		LeaderTransitions:    mine.record.LeaderTransitions,
	}
	returning := shutdown && e.cfg.ReturnWait > 0
	over := func(o *observation) *observation {
		if returning {
			return e.leavingToReturn(o)
		}
		return o
	}
	_, err := e.lock.update(ctx, over(mine), rec, epoch)
	if returning && apierrors.IsForbidden(err) {
		// An admission policy from before the successor annotation: a
		// plain release, rather than none, and a handover at once.
		e.log.Info("cannot name itself successor to come back to; releasing the lock to the others at once", "err", err.Error())
		returning = false
		_, err = e.lock.update(ctx, mine, rec, epoch)
	}
	// A follower naming itself successor writes the lock too: each such
	// write between this leader's last and its release is read and
	// released over, for as long as the release may take.
	for apierrors.IsConflict(err) && ctx.Err() == nil {
		var got *observation
		if got, err = e.lock.get(ctx); err == nil {
			e.mu.Lock()
			ours := got.record.HolderIdentity == e.cfg.ID && (got.record.equal(mine.record) || e.wasSentLocked(got.record))
			e.mu.Unlock()
			if !ours {
				e.log.Info("not releasing the lock: it is no longer this participant's", "holder", got.record.HolderIdentity)
				return
			}
			_, err = e.lock.update(ctx, over(got), rec, epoch)
		}
	}
	if err != nil {
		e.log.Error(err, "could not release the lock; the others take over when the lease expires")
		return
	}
	if returning {
		e.log.Info("released the lock, to come back to: the others leave it to this ID for the return wait", "reason", reason, "returnWait", e.cfg.ReturnWait)
	} else {
		e.log.Info("released the lock", "reason", reason)
	}
	msg := e.cfg.ID + " stopped leading: " + reason
	if shutdown {
		e.eventSync(ctx, eventNormal, "LeaderElection", msg)
	} else {
		e.event(eventNormal, "LeaderElection", msg)
	}
}

// appHealthy reports whether this participant's application is healthy
// (always, without a health check).
func (e *Elector) appHealthy() bool {
	return e.health == nil || e.health.ok()
}

// appHealthChanged is told each change of the application's health.
func (e *Elector) appHealthChanged(healthy bool, why string) {
	e.metrics.appHealth(healthy)
	if healthy {
		e.log.Info("the application is healthy; taking part in the election", "why", why)
	} else {
		e.log.Info("the application is unhealthy; not leading until it is healthy again", "why", why)
	}
	if healthy {
		e.mu.Lock()
		// An application that was unhealthy may have restarted and
		// forgotten what it was told: -notify-url tells it again.
		e.healthyAgain++
		e.mu.Unlock()
	}
	e.wake()
	e.notify()
}

// observe records a version of the lock from a watch event or a write's
// answer. A version older than what was already observed (an event that
// arrived after the answer to a later write) is dropped.
func (e *Elector) observe(obs *observation) {
	e.mu.Lock()
	prev := e.observed
	older := prev != nil && prev.object != nil && olderVersion(obs.object, prev.object)
	e.mu.Unlock()
	if !older {
		e.observeNewest(obs)
	}
}

// observeNewest records a version of the lock known to be the newest: a
// read, or what observe found no older than the last. observedAt moves when the version changes:
// that is the moment a lease is timed from.
func (e *Elector) observeNewest(obs *observation) {
	e.mu.Lock()
	prev := e.observed
	changed := prev == nil || !prev.sameVersion(obs)
	if changed {
		e.observedAt = time.Now()
		if prev != nil && !prev.record.equal(obs.record) {
			e.recordAt = e.observedAt
		}
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

// observeRead records what a read sent at sent found: a version of the
// lock, or nil for none. A read is the newest version when it is served,
// but its answer may come after that of a write, or an event of the watch,
// that is newer: then the read is dropped. (An older resourceVersion on
// its own does not make a read stale: after an etcd restore, the numbers
// start again lower.)
func (e *Elector) observeRead(got *observation, sent time.Time) {
	e.mu.Lock()
	prev, prevAt := e.observed, e.observedAt
	e.mu.Unlock()
	if prev != nil && prev.object != nil && prevAt.After(sent) &&
		(got == nil || olderVersion(got.object, prev.object)) {
		return
	}
	if got == nil {
		e.observeAbsent()
		return
	}
	e.observeNewest(got)
}

// observeAbsent records that the lock object is missing. Whoever makes it
// again leads only a TTL later: a leader that has not seen the deletion yet
// is not joined by a second.
func (e *Elector) observeAbsent() {
	e.mu.Lock()
	if e.observed == nil || e.observed.object != nil {
		last := &observation{}
		if e.observed != nil {
			last = e.observed
		}
		e.observed = &observation{record: last.record, epoch: last.epoch}
		e.observedAt = time.Now()
	}
	e.mu.Unlock()
	e.wake()
	e.notify()
}

func (e *Elector) snapshot() (*observation, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.observed, e.observedAt
}

func (e *Elector) setRunning(on bool) {
	e.mu.Lock()
	e.running = on
	e.mu.Unlock()
}

// wake tells the loop that something changed; it never blocks.
func (e *Elector) wake() {
	poke(e.changed)
}

// poke signals on ch without blocking. Every such channel has a buffer of
// one, and a signal already waiting in it says the same as this one.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// apiResult counts failed requests for the metrics.
func (e *Elector) apiResult(op string, err error) {
	if err != nil {
		e.metrics.apiError(op)
	}
}

// seed sets the participant's random sources. New seeds them from the
// clock; the simulation, from its schedule, so that a schedule replays
// exactly. Call it before Run.
func (e *Elector) seed(s uint64) {
	e.loopRand = rand.New(rand.NewPCG(s, 1))
	e.watchRand = rand.New(rand.NewPCG(s, 2))
}

// spreadFor is how long after the lease of the newest observed version this
// follower tries to take the lock: up to d/5, drawn once for that version.
func (e *Elector) spreadFor(d time.Duration) time.Duration {
	obs, _ := e.snapshot()
	if obs != e.spreadOf {
		e.spread, e.spreadOf = jitter(e.loopRand, d)-d, obs
	}
	return e.spread
}

// jitter is a random duration in [d, 1.2d) drawn from r: participants that
// woke together spread out.
func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return d + time.Duration(r.Int64N(int64(d)/5+1))
}
