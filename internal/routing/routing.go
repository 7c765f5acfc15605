// Package routing watches the EndpointSlice that electors run with
// -leader-service keep, beside their lock, and checks one against the other
// in etcd's order: the slice never lists two addresses, lists an address
// only while its participant holds the lock, and no longer lists a leader
// when it releases the lock. It times each handover of the lock and the
// time the Service had no endpoint around it. The tests and the benchmark
// use it on the local control plane.
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Event is one version of the Lease or of the EndpointSlice, as the watch
// received it.
type Event struct {
	At time.Time
	// RV is the resourceVersion: the revision of the one etcd, which
	// orders versions of both objects.
	RV uint64
	// Slice is set for a version of the slice, which lists Addresses in
	// Endpoints endpoints; a version of the Lease names its Holder.
	Slice     bool
	Addresses []string
	Endpoints int
	Holder    string
	// Deleted is the object's deletion: a Lease deleted is not released,
	// and a slice deleted lists nothing.
	Deleted bool
}

// Log is what a Watch received.
type Log struct {
	mu     sync.Mutex
	events []Event
	errs   []string
	stop   context.CancelFunc
	done   sync.WaitGroup
}

// Watch watches the EndpointSlice service and the Lease lease in ns until
// Close, from the state they are in now. A watch the API server ends (it
// restarted, say) is started again from the last version received, so
// none is missed.
func Watch(ctx context.Context, client kubernetes.Interface, ns, service, lease string) (*Log, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &Log{stop: cancel}
	slices := client.DiscoveryV1().EndpointSlices(ns)
	leases := client.CoordinationV1().Leases(ns)
	watches := []struct {
		list  func(context.Context, metav1.ListOptions) (string, error)
		watch func(context.Context, metav1.ListOptions) (watch.Interface, error)
	}{{
		list: func(ctx context.Context, o metav1.ListOptions) (string, error) {
			got, err := slices.List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, s := range got.Items {
				l.add(watch.Event{Type: watch.Added, Object: &s})
			}
			return got.ResourceVersion, nil
		},
		watch: slices.Watch,
	}, {
		list: func(ctx context.Context, o metav1.ListOptions) (string, error) {
			got, err := leases.List(ctx, o)
			if err != nil {
				return "", err
			}
			for _, le := range got.Items {
				l.add(watch.Event{Type: watch.Added, Object: &le})
			}
			return got.ResourceVersion, nil
		},
		watch: leases.Watch,
	}}
	for i, w := range watches {
		name := []string{service, lease}[i]
		rv, err := w.list(ctx, byName(name))
		if err != nil {
			cancel()
			return nil, err
		}
		rw, err := watchtools.NewRetryWatcherWithContext(ctx, rv, &cache.ListWatch{
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.FieldSelector = byName(name).FieldSelector
				return w.watch(ctx, o)
			},
		})
		if err != nil {
			cancel()
			return nil, err
		}
		l.done.Go(func() {
			defer rw.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-rw.ResultChan():
					if !ok {
						if ctx.Err() == nil {
							l.fail("the watch of %s ended before it was stopped", name)
						}
						return
					}
					if ev.Type == watch.Error {
						l.fail("the watch of %s: %v", name, ev.Object)
						continue
					}
					l.add(ev)
				}
			}
		})
	}
	return l, nil
}

func byName(name string) metav1.ListOptions {
	return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
}

func (l *Log) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, fmt.Sprintf(format, args...))
}

func (l *Log) add(ev watch.Event) {
	got := Event{At: time.Now()}
	var meta metav1.Object
	switch o := ev.Object.(type) {
	case *coordinationv1.Lease:
		meta = o
		if o.Spec.HolderIdentity != nil {
			got.Holder = *o.Spec.HolderIdentity
		}
	case *discoveryv1.EndpointSlice:
		meta = o
		got.Slice, got.Endpoints = true, len(o.Endpoints)
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
	rv, err := strconv.ParseUint(meta.GetResourceVersion(), 10, 64)
	if err != nil {
		l.fail("watch: resourceVersion %q: %v", meta.GetResourceVersion(), err)
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
}

// Check checks the log, in etcd's order, with ipOf mapping each
// participant's ID to its pod's IP.
func (l *Log) Check(ipOf map[string]string) Result {
	l.mu.Lock()
	events := slices.Clone(l.events)
	r := Result{Violations: slices.Clone(l.errs)}
	l.mu.Unlock()
	slices.SortFunc(events, func(a, b Event) int { return cmp.Compare(a.RV, b.RV) })

	holder, listed := "", ""
	var emptied, released time.Time
	for _, ev := range events {
		if !ev.Slice {
			switch {
			case ev.Deleted:
				released = time.Time{}
			case ev.Holder == holder:
			case ev.Holder == "":
				if listed != "" {
					r.Violations = append(r.Violations, fmt.Sprintf("rv %d: the lock was released by %s while the slice still listed %s", ev.RV, holder, listed))
				}
				released = ev.At
			case !released.IsZero():
				r.Handovers = append(r.Handovers, ev.At.Sub(released))
				released = time.Time{}
			}
			holder = ev.Holder
			continue
		}
		if len(ev.Addresses) > 1 || ev.Endpoints > 1 {
			r.Violations = append(r.Violations, fmt.Sprintf("rv %d: the slice lists %d endpoints, addresses %v", ev.RV, ev.Endpoints, ev.Addresses))
		}
		now := strings.Join(ev.Addresses, ",")
		if now != "" && now != ipOf[holder] {
			r.Violations = append(r.Violations, fmt.Sprintf("rv %d: the slice lists %s while the lock is held by %q (%s)", ev.RV, now, holder, ipOf[holder]))
		}
		switch {
		case ev.Deleted:
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
