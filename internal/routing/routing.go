// Package routing watches the EndpointSlice that electors run with
// -leader-service keep, beside their lock, and checks one against the other
// in etcd's order: the slice never lists two addresses, lists an address
// only while its participant holds the lock, and no longer lists a leader
// when it releases the lock. It times each handover of the lock and the
// time the Service had no endpoint around it. The tests, the benchmark
// and the chaos harness use it on the local control plane.
package routing

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// event is one version of the Lease or of the EndpointSlice, as the watch
// received it.
type event struct {
	At time.Time
	// RV is the resourceVersion: the revision of the one etcd, which
	// orders versions of both objects.
	RV uint64
	// Slice is set for a version of the slice, which lists Addresses in
	// Endpoints endpoints; a version of the Lease names its Holder.
	Slice     bool
	Addresses []string
	Endpoints int
	// Epoch is the slice's elector.vapor.io/epoch, 0 for none.
	Epoch  uint64
	Holder string
	// Deleted is the object's deletion: a Lease deleted is not released,
	// and a slice deleted lists nothing.
	Deleted bool
	// Resync is the object as read again after its watch lost track: what
	// happened since the event before is unknown.
	Resync bool
}

// Log is what a Watch received.
type Log struct {
	mu     sync.Mutex
	events []event
	errs   []string
	stop   context.CancelFunc
	done   sync.WaitGroup
}

// Watch watches the EndpointSlice service and the Lease lease in ns until
// Close, from the state they are in now. A watch the API server ends is
// started again from the last version received, so that none is missed;
// when that version is gone from the API server's history (it restarted,
// say), the object is read again, and the log notes the resync: what
// happened in between is unknown to Check.
func Watch(ctx context.Context, client kubernetes.Interface, ns, service, lease string) (*Log, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &Log{stop: cancel}
	endpointSlices := client.DiscoveryV1().EndpointSlices(ns)
	leases := client.CoordinationV1().Leases(ns)
	objects := []*follower{
		{name: service, list: lister(endpointSlices.List), watch: endpointSlices.Watch, absent: &discoveryv1.EndpointSlice{}},
		{name: lease, list: lister(leases.List), watch: leases.Watch, absent: &coordinationv1.Lease{}},
	}
	for _, f := range objects {
		rv, err := f.resync(ctx, l)
		if err != nil {
			cancel()
			return nil, err
		}
		l.done.Go(func() { f.follow(ctx, l, rv) })
	}
	return l, nil
}

// lister lists with list, and returns the items and the list's version.
func lister[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error)) listFunc {
	return func(ctx context.Context, o metav1.ListOptions) ([]runtime.Object, string, error) {
		got, err := list(ctx, o)
		if err != nil {
			return nil, "", err
		}
		items, err := meta.ExtractList(got)
		if err != nil {
			return nil, "", err
		}
		m, err := meta.ListAccessor(got)
		if err != nil {
			return nil, "", err
		}
		return items, m.GetResourceVersion(), nil
	}
}

// listFunc lists the objects one name selects, and says the list's version.
type listFunc func(context.Context, metav1.ListOptions) ([]runtime.Object, string, error)

// follower follows one object.
type follower struct {
	name  string
	list  listFunc
	watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
	// absent stands for the object when it does not exist.
	absent runtime.Object
}

// resync reads the object and logs it as a resync; it returns the
// version to watch from.
func (f *follower) resync(ctx context.Context, l *Log) (string, error) {
	objs, rv, err := f.list(ctx, byName(f.name))
	if err != nil {
		return "", err
	}
	if len(objs) == 0 {
		// Absent as of the list.
		absent := f.absent.DeepCopyObject()
		if m, err := meta.Accessor(absent); err == nil {
			m.SetResourceVersion(rv)
		}
		l.add(watch.Event{Type: watch.Deleted, Object: absent}, true)
	}
	for _, o := range objs {
		l.add(watch.Event{Type: watch.Added, Object: o}, true)
	}
	return rv, nil
}

// follow watches from rv until ctx ends.
func (f *follower) follow(ctx context.Context, l *Log, rv string) {
	for ctx.Err() == nil {
		o := byName(f.name)
		o.ResourceVersion, o.AllowWatchBookmarks = rv, true
		w, err := f.watch(ctx, o)
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			rv = f.mustResync(ctx, l)
			continue
		}
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				err = apierrors.FromObject(ev.Object)
				break
			}
			if m, merr := meta.Accessor(ev.Object); merr == nil {
				rv = m.GetResourceVersion()
			}
			if ev.Type != watch.Bookmark {
				l.add(ev, false)
			}
		}
		w.Stop()
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			rv = f.mustResync(ctx, l)
		}
	}
}

// mustResync resyncs until it succeeds or ctx ends.
func (f *follower) mustResync(ctx context.Context, l *Log) string {
	for ctx.Err() == nil {
		rv, err := f.resync(ctx, l)
		if err == nil {
			return rv
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return ""
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func byName(name string) metav1.ListOptions {
	return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
}

func (l *Log) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

func (l *Log) add(ev watch.Event, resync bool) {
	got := event{At: time.Now(), Resync: resync}
	var m metav1.Object
	switch o := ev.Object.(type) {
	case *coordinationv1.Lease:
		m = o
		if o.Spec.HolderIdentity != nil {
			got.Holder = *o.Spec.HolderIdentity
		}
	case *discoveryv1.EndpointSlice:
		m = o
		got.Slice, got.Endpoints = true, len(o.Endpoints)
		got.Epoch, _ = strconv.ParseUint(o.Annotations[election.AnnotationEpoch], 10, 64)
		for _, ep := range o.Endpoints {
			got.Addresses = append(got.Addresses, ep.Addresses...)
		}
	default:
		l.fail("watch: unexpected %s event %T", ev.Type, ev.Object)
		return
	}
	if ev.Type == watch.Deleted {
		got.Deleted, got.Holder, got.Addresses, got.Endpoints = true, "", nil, 0
	}
	rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	if err != nil {
		l.fail("watch: resourceVersion %q: %v", m.GetResourceVersion(), err)
	}
	got.RV = rv
	l.mu.Lock()
	l.events = append(l.events, got)
	l.mu.Unlock()
}

// Close stops the watches.
func (l *Log) Close() {
	l.stop()
	l.done.Wait()
}

// Listed is the address the slice lists as last received, "" for none.
func (l *Log) Listed() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range slices.Backward(l.events) {
		if ev.Slice {
			return strings.Join(ev.Addresses, ",")
		}
	}
	return ""
}

// Result is what Check found.
type Result struct {
	// Violations are the versions that broke a rule, and the watches'
	// errors.
	Violations []string
	// Handovers are the times from a release of the lock to its next
	// holder's write, and Gaps from the slice's last address leaving to
	// the next one listed, in the order they happened.
	Handovers, Gaps []time.Duration
	// Versions counts the versions of the slice checked.
	Versions int
}

func (r *Result) violate(format string, args ...any) {
	r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
}

// Check checks the log, in etcd's order, with ipOf mapping each
// participant's ID to its pod's IP. A version of the slice that lists an
// address must:
//   - list one address at most;
//   - list the lock's holder, or the participant that held the lock before
//     it, until the holder has listed itself: a write the old leader sent
//     while it led may land after the lock changed hands (an admin deleted
//     it, say), but never after the new leader's own;
//   - carry an epoch no lower than an earlier listing's.
//
// And a leader releases the lock only once the slice no longer lists it.
func (l *Log) Check(ipOf map[string]string) Result {
	l.mu.Lock()
	events := slices.Clone(l.events)
	r := Result{Violations: slices.Clone(l.errs)}
	l.mu.Unlock()
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.RV, b.RV) })

	// holder holds the lock ("" when released); last is the participant
	// that took it last, and previous the one before; routed is set once
	// last has listed itself.
	var holder, last, previous, listed string
	var routed bool
	var epoch uint64
	var emptied, released time.Time
	for _, ev := range events {
		if !ev.Slice {
			switch {
			case ev.Deleted || ev.Resync:
				released = time.Time{}
			case ev.Holder == holder:
			case ev.Holder == "":
				if listed != "" && listed == ipOf[holder] {
					r.violate("rv %d: the lock was released by %s while the slice still listed %s", ev.RV, holder, listed)
				}
				released = ev.At
			case !released.IsZero():
				r.Handovers = append(r.Handovers, ev.At.Sub(released))
				released = time.Time{}
			}
			if ev.Holder != "" && ev.Holder != last {
				// Whether the new holder listed itself before a resync is
				// unknown: the old one's write is let through.
				previous, last, routed = last, ev.Holder, false
			}
			holder = ev.Holder
			continue
		}
		r.Versions++
		if len(ev.Addresses) > 1 || ev.Endpoints > 1 {
			r.violate("rv %d: the slice lists %d endpoints, addresses %v", ev.RV, ev.Endpoints, ev.Addresses)
		}
		now := strings.Join(ev.Addresses, ",")
		switch {
		case now == "" || ev.Resync:
		case now == ipOf[last]:
			routed = true
		case now != ipOf[previous] || routed:
			r.violate("rv %d: the slice lists %s while the lock is held by %q (%s), after %q", ev.RV, now, last, ipOf[last], previous)
		}
		if now != "" && ev.Epoch != 0 {
			if ev.Epoch < epoch && !ev.Resync {
				r.violate("rv %d: the slice lists %s at epoch %d, after a listing at epoch %d", ev.RV, now, ev.Epoch, epoch)
			}
			epoch = max(epoch, ev.Epoch)
		}
		switch {
		case ev.Deleted || ev.Resync:
			emptied = time.Time{}
		case now == "" && listed != "":
			emptied = ev.At
		case now != "" && listed == "" && !emptied.IsZero():
			r.Gaps = append(r.Gaps, ev.At.Sub(emptied))
			emptied = time.Time{}
		}
		listed = now
	}
	return r
}
