package election

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The newest participant leads next.
//
// Without a successor, every follower races for a released lock, and in a
// rolling update the race is as likely to go to an old pod, about to be
// replaced in turn, as to a new one: leadership hops from old pod to old
// pod before it lands on a new one, an outage for a leader-only workload at
// each hop. So the followers keep a successor named on the
// lock object: the participant that joined last (the newest pod of a
// rollout), in AnnotationSuccessor. A follower newer than the one named
// writes itself there, with a compare-and-swap that changes nothing else,
// just after it sees the leader renew; the leader renews over it.
//
// After a release, the named successor takes the lock at once; the others
// give it successorGrace first, and race for it if it has not. A
// successor that is gone costs a handover that grace. One racer instead of
// all of them also makes the handover itself faster: the API server
// answers one write, not one per follower.
//
// A StatefulSet's pod comes back under its own name, and a StatefulSet
// rollout replaces its pods from the highest ordinal down. When the leader
// is a pod replaced before the others, every follower is an old pod: a
// handover to any of them is followed by a second when that one is
// replaced. So a leader with a ReturnWait names itself successor as it
// shuts down, as "return/<wait ms>/<id>", and the others leave the lock to
// it for that wait (at most their TTL, a crash's failover): one handover,
// to the same name in its new pod, after a gap of the pod's restart. If it
// is not back by then (scaled down, say), they race for the lock.
//
// None of this touches safety: a successor takes a released lock with the
// same compare-and-swap as anyone, and a proposal is a write of the lock
// object like any other, which every follower times the lease from.

// proposeAgainAfter is how long a follower whose proposal was refused
// (Forbidden) waits before it proposes again.
const proposeAgainAfter = 5 * time.Minute

// successorGrace is how long the followers that are not the named successor
// leave it to take a released lock.
func (c *Config) successorGrace() time.Duration { return c.RetryPeriod / 4 }

// candidate is a participant as AnnotationSuccessor names it: when it
// joined (Unix milliseconds) and its ID, as "<joined>/<id>"; or a leader
// that left to come back under its ID within returnWait, as
// "return/<wait ms>/<id>". A returning one ranks below every other, so a
// follower that joins later names itself over it once a leader renews.
type candidate struct {
	joined     int64
	id         string
	returnWait time.Duration
}

// returnPrefix starts the AnnotationSuccessor value of a leader that left
// to come back. Electors of releases before it read no successor there, and
// race for the lock at once.
const returnPrefix = "return/"

func (c candidate) String() string {
	if c.returnWait > 0 {
		return returnPrefix + strconv.FormatInt(c.returnWait.Milliseconds(), 10) + "/" + c.id
	}
	return strconv.FormatInt(c.joined, 10) + "/" + c.id
}

// parseCandidate reads an AnnotationSuccessor value.
func parseCandidate(v string) (candidate, bool) {
	if rest, ok := strings.CutPrefix(v, returnPrefix); ok {
		c, ok := parseCandidate(rest)
		// No wait is longer than a TTL (whole seconds, and an int32 of them
		// in a Lease): a longer one is garbage, not a candidate.
		if !ok || c.joined <= 0 || c.joined > math.MaxInt32*1000 {
			return candidate{}, false
		}
		return candidate{id: c.id, returnWait: time.Duration(c.joined) * time.Millisecond}, true
	}
	joined, id, ok := strings.Cut(v, "/")
	if !ok || id == "" {
		return candidate{}, false
	}
	ms, err := strconv.ParseInt(joined, 10, 64)
	if err != nil {
		return candidate{}, false
	}
	return candidate{joined: ms, id: id}, true
}

// newerThan reports whether c joined after o (on a tie, whether its ID
// sorts after o's), so that every participant ranks two the same way.
func (c candidate) newerThan(o candidate) bool {
	return c.joined > o.joined || c.joined == o.joined && c.id > o.id
}

// successorOf is the successor named on the version obs, if any. One that
// names the holder is spent: it took the lock.
func successorOf(obs *observation) (candidate, bool) {
	if obs == nil || obs.object == nil {
		return candidate{}, false
	}
	c, ok := parseCandidate(obs.object.GetAnnotations()[AnnotationSuccessor])
	if !ok || c.id == obs.record.HolderIdentity {
		return candidate{}, false
	}
	return c, true
}

// yieldLeft is how long this follower still leaves a released lock, seen
// in obs at observedAt, to the successor named on it: zero when it is the
// successor, none is named, or the grace is over. A leader that left to
// come back is waited for whatever -prefer-newest says: it asked for it.
func (e *Elector) yieldLeft(obs *observation, observedAt, now time.Time) time.Duration {
	if obs == nil || obs.object == nil || obs.readErr != nil || obs.record.HolderIdentity != "" {
		return 0
	}
	next, ok := successorOf(obs)
	if !ok || next.id == e.cfg.ID {
		return 0
	}
	grace := e.cfg.successorGrace()
	switch {
	case next.returnWait > 0:
		grace = min(next.returnWait, e.cfg.TTL)
	case !e.cfg.PreferNewest:
		return 0
	}
	return max(observedAt.Add(grace).Sub(now), 0)
}

// leavingToReturn is obs as the release of a leader with a ReturnWait
// writes over it: naming itself the successor, to come back to.
func (e *Elector) leavingToReturn(obs *observation) *observation {
	obj := obs.object.DeepCopyObject().(object)
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationSuccessor] = candidate{id: e.cfg.ID, returnWait: e.cfg.ReturnWait}.String()
	obj.SetAnnotations(annotations)
	out := *obs
	out.object = obj
	return &out
}

// propose names this follower the successor on obs, the version it last
// observed, if it is newer than the one named there. It returns how long
// until it means to, when that is still ahead.
//
// It does so only while the holder is seen renewing: a proposal is a new
// version of the lock, and every follower restarts its wait for the lease
// on it, which must not hold back the failover from a leader that has
// stopped. And it waits a random part of half a retry period after it saw
// the renewal: followers that joined together (a Deployment scaled up, the
// followers left when the successor took the lock) do not all write at
// once, and one that sees a newer one named by then writes nothing.
func (e *Elector) propose(ctx context.Context, obs *observation, now time.Time) time.Duration {
	if !e.cfg.PreferNewest || !e.appHealthy() || obs.object == nil || obs.readErr != nil ||
		obs.record.HolderIdentity == "" || obs.record.HolderIdentity == e.cfg.ID {
		return 0
	}
	if named, ok := successorOf(obs); ok && (named.id == e.cfg.ID || !e.self.newerThan(named)) {
		return 0
	}
	window := e.cfg.RetryPeriod / 2
	e.mu.Lock()
	seen := e.recordAt
	if seen.IsZero() && time.Since(obs.record.RenewTime.Time) < e.cfg.RetryPeriod+RecordPrecision {
		// Just joined: the record (in whole seconds) says its holder
		// renewed within a retry period, by this participant's wall
		// clock. A skewed clock costs a failover time, never safety.
		seen = e.observedAt
	}
	if e.proposeFor != seen {
		e.proposeFor = seen
		// A participant that just joined proposes at once: it is a new
		// pod of a rollout, and the old leader may be told to stop as
		// soon as the new pod is ready. Later proposals spread out.
		e.proposeIn = 0
		if e.proposed != nil || !e.recordAt.IsZero() {
			e.proposeIn = time.Duration(e.loopRand.Int64N(int64(window)/2 + 1))
		}
	}
	at := seen.Add(e.proposeIn)
	due := !seen.IsZero() && !now.Before(at) && now.Sub(seen) < window
	spent := e.proposed != nil && e.proposed.sameVersion(obs)
	if due && !spent {
		e.proposed = obs
	}
	off := now.Before(e.proposeOffUntil)
	e.mu.Unlock()
	switch {
	case off || spent || seen.IsZero():
		return 0
	case now.Before(at):
		return at.Sub(now)
	case !due:
		return 0
	}
	rctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	got, err := e.lock.annotate(rctx, obs, AnnotationSuccessor, e.self.String())
	switch {
	case err == nil:
		e.log.V(1).Info("named itself the successor")
		e.observe(got)
	case apierrors.IsForbidden(err):
		// An admission policy from before the successor annotation, or an
		// API server that has just restarted: the election runs without a
		// successor, every follower racing after a release, and it tries
		// again later.
		e.mu.Lock()
		e.proposeOffUntil = now.Add(proposeAgainAfter)
		e.mu.Unlock()
		e.log.Info("cannot name a successor on the lock; followers race for it after a release until it can", "retryIn", proposeAgainAfter, "err", err.Error())
	case !apierrors.IsConflict(err):
		e.apiResult("propose", err)
	}
	return 0
}
