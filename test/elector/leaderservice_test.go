package elector

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// leaderServiceName is the Service the tests' electors keep.
const leaderServiceName = "leader"

// createLeaderService makes the selector-less Service leaderServiceName in
// ns, annotated with the election it routes to.
func createLeaderService(t *testing.T, ns string) *corev1.Service {
	t.Helper()
	svc, err := env.Client.CoreV1().Services(ns).Create(ctxFor(t, apiTimeout), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: leaderServiceName, Annotations: map[string]string{election.AnnotationElection: electionName}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "grpc", Port: 9090},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// routeEvent is one version of the lock or of the leader's EndpointSlice,
// as the test's watch received it.
type routeEvent struct {
	at time.Time
	rv uint64
	// lease: the holder; slice: the addresses listed.
	holder    string
	isSlice   bool
	addresses []string
	endpoints int
	epoch     string
}

// routeLog watches the Lease and the EndpointSlice of one election.
type routeLog struct {
	mu     sync.Mutex
	events []routeEvent
	stop   context.CancelFunc
	done   sync.WaitGroup
}

func watchRoutes(t *testing.T, ns string) *routeLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &routeLog{stop: cancel}
	t.Cleanup(l.close)
	slices, err := env.Client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", leaderServiceName).String()})
	if err != nil {
		t.Fatal(err)
	}
	leases, err := env.Client.CoordinationV1().Leases(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", electionName).String()})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []watch.Interface{slices, leases} {
		l.done.Go(func() {
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					if !ok {
						if ctx.Err() == nil {
							t.Errorf("a watch closed before the test ended")
						}
						return
					}
					l.add(t, ev)
				}
			}
		})
	}
	return l
}

func (l *routeLog) add(t *testing.T, ev watch.Event) {
	got := routeEvent{at: time.Now()}
	var meta metav1.Object
	switch o := ev.Object.(type) {
	case *coordinationv1.Lease:
		meta = o
		if o.Spec.HolderIdentity != nil {
			got.holder = *o.Spec.HolderIdentity
		}
	case *discoveryv1.EndpointSlice:
		meta = o
		got.isSlice, got.endpoints, got.epoch = true, len(o.Endpoints), o.Annotations[election.AnnotationEpoch]
		for _, ep := range o.Endpoints {
			got.addresses = append(got.addresses, ep.Addresses...)
		}
	default:
		t.Errorf("watch: unexpected %s event %T", ev.Type, ev.Object)
		return
	}
	if ev.Type == watch.Deleted {
		t.Errorf("watch: %T %s deleted", ev.Object, meta.GetName())
	}
	rv, err := strconv.ParseUint(meta.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Errorf("watch: resourceVersion %q: %v", meta.GetResourceVersion(), err)
	}
	got.rv = rv
	l.mu.Lock()
	l.events = append(l.events, got)
	l.mu.Unlock()
}

func (l *routeLog) close() {
	l.stop()
	l.done.Wait()
}

// byRevision is the log in the order the one etcd wrote it: a
// resourceVersion is its revision.
func (l *routeLog) byRevision() []routeEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.events)
	slices.SortFunc(out, func(a, b routeEvent) int { return int(a.rv) - int(b.rv) })
	return out
}

// listed is the address the slice lists now, or "".
func (l *routeLog) listed() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range slices.Backward(l.events) {
		if ev.isSlice {
			return strings.Join(ev.addresses, ",")
		}
	}
	return ""
}

// TestLeaderService hands over 100 times among three participants with
// -leader-service (each leader shut down with SIGTERM, a new participant
// started in its place), and checks every version of the EndpointSlice,
// in etcd's order, against the lock:
//   - it never lists two addresses;
//   - it lists an address only while the lock is held by that address's
//     participant;
//   - the lock is never released while the slice lists the releasing
//     leader: the address leaves first.
//
// It reports how long the Service had no endpoint at each handover,
// beside how long the handover took (the lock released to the lock taken),
// as the test's watches received them.
func TestLeaderService(t *testing.T) {
	ns := env.Namespace(t)
	createLeaderService(t, ns)
	routes := watchRoutes(t, ns)
	w := newWatcher(t, std.gap())
	ipOf := map[string]string{}
	n := 0
	start := func() *participant {
		n++
		id := fmt.Sprintf("p%d", n)
		ipOf[id] = fmt.Sprintf("10.1.%d.%d", n/250, n%250+1)
		return w.start(id, adminKubeconfig, electionArgs(ns, std,
			"-leader-service="+leaderServiceName, "-pod-name=pod-"+id, "-pod-ip="+ipOf[id])...)
	}
	waitListed := func(p *participant) {
		t.Helper()
		eventually(t, settle, func() error {
			if got := routes.listed(); got != ipOf[p.id] {
				return fmt.Errorf("the slice lists %q, want %s's %s", got, p.id, ipOf[p.id])
			}
			return nil
		})
	}

	rounds := 100
	if testing.Short() {
		rounds = 10
	}
	ps := []*participant{start(), start(), start()}
	leader := w.waitLeader(settle, ps...)
	for range rounds {
		waitListed(leader)
		if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("leader %s exited with %v after SIGTERM, want status 0", leader.id, err)
		}
		ps = append(slices.DeleteFunc(ps, func(p *participant) bool { return p == leader }), start())
		leader = w.waitLeader(settle, ps...)
	}
	waitListed(leader)
	routes.close()
	checkRoutes(t, routes.byRevision(), ipOf, rounds)
}

// checkRoutes checks the slice against the lock, version by version, and
// reports the gaps.
func checkRoutes(t *testing.T, events []routeEvent, ipOf map[string]string, rounds int) {
	t.Helper()
	holder, listed := "", ""
	var emptied, released time.Time
	var gaps, handovers []time.Duration
	for _, ev := range events {
		if !ev.isSlice {
			switch {
			case ev.holder == holder:
			case ev.holder == "":
				if listed != "" {
					t.Errorf("rv %d: the lock was released by %s while the slice still listed %s", ev.rv, holder, listed)
				}
				released = ev.at
			case !released.IsZero():
				handovers = append(handovers, ev.at.Sub(released))
				released = time.Time{}
			}
			holder = ev.holder
			continue
		}
		if len(ev.addresses) > 1 || ev.endpoints > 1 {
			t.Errorf("rv %d: the slice lists %d endpoints, addresses %v", ev.rv, ev.endpoints, ev.addresses)
		}
		now := strings.Join(ev.addresses, ",")
		if now != "" && now != ipOf[holder] {
			t.Errorf("rv %d: the slice lists %s while the lock is held by %q (%s)", ev.rv, now, holder, ipOf[holder])
		}
		switch {
		case now == "" && listed != "":
			emptied = ev.at
		case now != "" && listed == "" && !emptied.IsZero():
			gaps = append(gaps, ev.at.Sub(emptied))
			emptied = time.Time{}
		}
		listed = now
	}
	if len(gaps) != rounds || len(handovers) != rounds {
		t.Errorf("saw %d gaps without an endpoint and %d handovers of the lock, want %d of each", len(gaps), len(handovers), rounds)
	}
	t.Logf("%d handovers: lock released to taken %s; slice without an endpoint %s", rounds, quantiles(handovers), quantiles(gaps))
}
