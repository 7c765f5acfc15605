package election

import (
	"context"
	"math/rand/v2"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
)

// watchLock keeps a watch on the lock object and feeds every version it sees
// to observe, until ctx is done. A watch from no resourceVersion starts with
// the object as it is, so no list (and no list permission) is needed. This is how followers learn of renewals and
// releases without polling: a leader's renewal costs the API server one write
// and one watch event per follower, whatever the size of the election.
//
// The watch only makes things faster. Safety does not depend on it: a
// follower that missed an event acts on an older version, and the
// compare-and-swap on resourceVersion rejects that.
func (e *Elector) watchLock(ctx context.Context) {
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	resourceVersion := ""
	for ctx.Err() == nil {
		// The server ends a watch after timeoutSeconds; a spread of five to
		// ten minutes keeps a fleet of electors from reconnecting in step.
		timeout := int64(300 + rand.IntN(300))
		w, err := e.lock.watch(ctx, resourceVersion, timeout)
		if err != nil {
			e.apiResult("watch", err)
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				resourceVersion = ""
			}
			e.log.V(1).Info("could not watch the lock", "err", err.Error(), "retryIn", backoff)
			backoff = sleep(ctx, backoff, e.cfg.RetryPeriod)
			continue
		}
		e.apiResult("watch", nil)
		var events int
		resourceVersion, events = e.consume(w, resourceVersion)
		w.Stop()
		if events > 0 {
			backoff = minBackoff
		} else if ctx.Err() == nil {
			backoff = sleep(ctx, backoff, e.cfg.RetryPeriod)
		}
	}
}

// consume reads one watch until it ends. It returns the resourceVersion to
// watch from next ("" to list again) and how many events it read.
func (e *Elector) consume(w watch.Interface, resourceVersion string) (string, int) {
	var events int
	for ev := range w.ResultChan() {
		events++
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark:
			obj, ok := ev.Object.(object)
			if !ok {
				continue
			}
			resourceVersion = obj.GetResourceVersion()
			switch ev.Type {
			case watch.Deleted:
				e.observeDeleted()
			case watch.Added, watch.Modified:
				obs, err := e.lock.observe(obj)
				if err != nil {
					e.log.Error(err, "ignoring a version of the lock that cannot be read")
					continue
				}
				e.observe(obs)
			}
		case watch.Error:
			err := apierrors.FromObject(ev.Object)
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				return "", events
			}
			e.log.V(1).Info("watch error", "err", err.Error())
			return resourceVersion, events
		}
	}
	return resourceVersion, events
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
