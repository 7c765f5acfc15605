package election

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
)

// An elector refused the watch reads its lock by GET for a while before it
// tries to watch again: first minPollWithoutWatch, doubling up to
// maxPollWithoutWatch while the refusals go on. A kube-apiserver that has
// just restarted may refuse a watch it allows a moment later (its
// authorizer is not warm yet), and a Role may be fixed in the meantime.
const (
	minPollWithoutWatch = 10 * time.Second
	maxPollWithoutWatch = 5 * time.Minute
)

// watchLock keeps a watch on the lock object and feeds every version it sees
// to observe, until ctx is done. A watch from no resourceVersion starts with
// the object as it is, so no list (and no list permission) is needed. This
// is how followers learn of renewals and releases without polling: a
// leader's renewal costs the API server one write and one watch event per
// follower, whatever the size of the election.
//
// Without the right to watch (the Roles of upstream k8s-elector granted
// none), it reads the lock every retry period instead, so a follower still
// sees every renewal and release within a retry period.
//
// The watch only makes things faster. Safety does not depend on it: a
// follower that missed an event times the lease from a later observation,
// and the compare-and-swap on resourceVersion rejects a stale write.
func (e *Elector) watchLock(ctx context.Context) {
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	pollFor := minPollWithoutWatch
	resourceVersion := ""
	for ctx.Err() == nil {
		// The server ends a watch after timeoutSeconds; a spread of five to
		// ten minutes keeps a fleet of electors from reconnecting in step.
		timeout := int64(300 + e.watchRand.IntN(300))
		sent := time.Now()
		w, err := e.lock.watch(ctx, resourceVersion, timeout)
		if err != nil {
			e.apiResult("watch", err)
			// Whatever went wrong (the version is too old, or too new after
			// an etcd restore), start again from the object as it is.
			resourceVersion = ""
			if apierrors.IsForbidden(err) {
				e.poll(ctx, pollFor)
				pollFor = min(2*pollFor, maxPollWithoutWatch)
				continue
			}
			e.log.V(1).Info("could not watch the lock", "err", err.Error(), "retryIn", backoff)
			backoff = sleep(ctx, backoff, e.cfg.RetryPeriod)
			continue
		}
		next, events, ok := e.consume(w, resourceVersion, sent)
		w.Stop()
		switch {
		case !ok:
			// An error event: back off, and start again from the object as
			// it is. The backoff is reset only by a watch that worked.
			resourceVersion = ""
			backoff = sleep(ctx, backoff, e.cfg.RetryPeriod)
		case events > 0:
			resourceVersion = next
			backoff, pollFor = minBackoff, minPollWithoutWatch
		default:
			resourceVersion = next
			if ctx.Err() == nil {
				backoff = sleep(ctx, backoff, e.cfg.RetryPeriod)
			}
		}
	}
}

// consume reads one watch, sent at sent, until it ends. It returns the
// resourceVersion to watch from next, how many versions it read, and false
// if it ended with an error event.
func (e *Elector) consume(w watch.Interface, resourceVersion string, sent time.Time) (string, int, bool) {
	// A watch from no version starts with the object as it was when the
	// watch was served: that first version is taken as a read sent at sent
	// (see observeRead), the newest whatever its number (after an etcd
	// restore, numbers start again lower), unless a newer version came in
	// since, such as the answer to this participant's own write. Taken as
	// the newest then, a participant that took the lock at once as it
	// started would see the lock released again by its own first event,
	// step down, and wait out its own lease.
	fresh := resourceVersion == ""
	var events int
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark:
			obj, ok := ev.Object.(object)
			if !ok {
				continue
			}
			resourceVersion = obj.GetResourceVersion()
			switch ev.Type {
			case watch.Deleted:
				e.observeAbsent()
			case watch.Added, watch.Modified:
				obs := e.lock.observe(obj)
				if obs.readErr != nil {
					e.log.Error(obs.readErr, "the lock holds a record that cannot be read; it counts as held until a full lease has passed")
				}
				if fresh {
					e.observeRead(obs, sent)
				} else {
					e.observe(obs)
				}
			}
			if ev.Type != watch.Bookmark {
				events++
				fresh = false
			}
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			e.apiResult("watch", err)
			e.log.V(1).Info("watch error", "err", err.Error())
			return "", events, false
		}
	}
	return resourceVersion, events, true
}

// poll reads the lock every retry period for d, or until ctx is done.
func (e *Elector) poll(ctx context.Context, d time.Duration) {
	// A Role without watch is one cause; an API server that has just
	// restarted refuses watches for a few seconds too, until its RBAC
	// cache is filled.
	e.log.Info("the API server refused to watch the lock; reading it every retry period instead (grant watch on the lock for faster failover)",
		"retryPeriod", e.cfg.RetryPeriod, "watchAgainIn", d)
	until := time.Now().Add(d)
	for ctx.Err() == nil && time.Now().Before(until) {
		rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewDeadline)
		_ = e.read(rctx) // counted in the metrics; the next read retries
		cancel()
		sleep(ctx, jitter(e.watchRand, e.cfg.RetryPeriod), 0)
	}
}

// sleep waits d or until ctx is done, and returns the next backoff: double,
// up to max.
func sleep(ctx context.Context, d, max time.Duration) time.Duration {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return min(2*d, max)
}
