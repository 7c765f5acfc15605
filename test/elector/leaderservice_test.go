package elector

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vapor-ware/k8s-elector/internal/routing"
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

// routedNamespace makes a namespace with the Service leaderServiceName,
// and watches its slice and the election's lock until the test ends.
func routedNamespace(t *testing.T) (string, *routing.Log) {
	t.Helper()
	ns := env.Namespace(t)
	createLeaderService(t, ns)
	routes, err := routing.Watch(ctxFor(t, 10*settle), env.Client, ns, leaderServiceName, electionName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(routes.Close)
	return ns, routes
}

// routedArgs are the args of participant id of the election in ns, run
// with -leader-service and ip as its pod's IP.
func routedArgs(ns, id, ip string) []string {
	return electionArgs(ns, std, "-leader-service="+leaderServiceName, "-pod-name=pod-"+id, "-pod-ip="+ip)
}

// waitListed waits for the slice to list ip alone.
func waitListed(t *testing.T, routes *routing.Log, ip string) {
	t.Helper()
	eventually(t, settle, func() error {
		if got := routes.Listed(); got != ip {
			return fmt.Errorf("the slice lists %q, want %s", got, ip)
		}
		return nil
	})
}

// TestLeaderService hands over 100 times among three participants with
// -leader-service (each leader shut down with SIGTERM, a new participant
// started in its place), and checks every version of the EndpointSlice,
// in etcd's order, against the lock (see routing.Check): it never lists
// two addresses, lists an address only while its participant holds the
// lock, and no longer lists a leader when the lock is released.
//
// It reports how long the Service had no endpoint at each handover,
// beside how long the handover took (the lock released to the lock taken),
// as the test's watches received them.
func TestLeaderService(t *testing.T) {
	ns, routes := routedNamespace(t)
	w := newWatcher(t, std.gap())
	ipOf := map[string]string{}
	n := 0
	start := func() *participant {
		n++
		id := fmt.Sprintf("p%d", n)
		ipOf[id] = fmt.Sprintf("10.1.%d.%d", n/250, n%250+1)
		return w.start(id, adminKubeconfig, routedArgs(ns, id, ipOf[id])...)
	}

	rounds := 100
	if testing.Short() {
		rounds = 10
	}
	ps := []*participant{start(), start(), start()}
	leader := w.waitLeader(settle, ps...)
	for range rounds {
		waitListed(t, routes, ipOf[leader.id])
		if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("leader %s exited with %v after SIGTERM, want status 0", leader.id, err)
		}
		if !strings.Contains(leader.Logs(), "released the lock") {
			t.Errorf("leader %s did not release the lock:\n%s", leader.id, leader.Logs())
		}
		ps = append(slices.DeleteFunc(ps, func(p *participant) bool { return p == leader }), start())
		leader = w.waitLeader(settle, ps...)
	}
	waitListed(t, routes, ipOf[leader.id])
	routes.Close()
	r := routes.Check(ipOf)
	for _, v := range r.Violations {
		t.Error(v)
	}
	if len(r.Gaps) != rounds || len(r.Handovers) != rounds {
		t.Errorf("saw %d gaps without an endpoint and %d handovers of the lock, want %d of each", len(r.Gaps), len(r.Handovers), rounds)
	}
	t.Logf("%d handovers, %d versions of the slice checked: lock released to taken %s; slice without an endpoint %s", rounds, r.Versions, quantiles(r.Handovers), quantiles(r.Gaps))
}

// TestLeaderServiceRepair: the leader writes its slice back when someone
// deletes it or lists another address, and follows a change of the
// Service's ports, within a resync (the TTL) or so. A leader frozen past
// its lease lists itself no more once it resumes: the next leader's
// address stays. Every version is checked against the lock as in
// TestLeaderService.
func TestLeaderServiceRepair(t *testing.T) {
	ns, routes := routedNamespace(t)
	w := newWatcher(t, std.gap())
	ipOf := map[string]string{}
	var ps []*participant
	for i, id := range []string{"a", "b", "c"} {
		ipOf[id] = fmt.Sprintf("10.2.0.%d", i+1)
		ps = append(ps, w.start(id, adminKubeconfig, routedArgs(ns, id, ipOf[id])...))
	}
	endpointSlices := env.Client.DiscoveryV1().EndpointSlices(ns)
	waitSlice := func(what string, ok func(*discoveryv1.EndpointSlice) bool) {
		t.Helper()
		eventually(t, std.ttl+settle/3, func() error {
			s, err := endpointSlices.Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !ok(s) {
				return fmt.Errorf("want %s; the slice is %v", what, s.Endpoints)
			}
			return nil
		})
	}
	lists := func(id string) func(*discoveryv1.EndpointSlice) bool {
		return func(s *discoveryv1.EndpointSlice) bool {
			return len(s.Endpoints) == 1 && strings.Join(s.Endpoints[0].Addresses, ",") == ipOf[id]
		}
	}

	leader := w.waitLeader(settle, ps...)
	waitSlice(leader.id+" listed", lists(leader.id))

	if err := endpointSlices.Delete(ctxFor(t, apiTimeout), leaderServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSlice(leader.id+" listed again after the slice was deleted", lists(leader.id))

	s, err := endpointSlices.Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Endpoints[0].Addresses = []string{"10.9.9.9"}
	if _, err := endpointSlices.Update(ctxFor(t, apiTimeout), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSlice(leader.id+" listed again after another address was written", lists(leader.id))

	svc, err := env.Client.CoreV1().Services(ns).Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Ports[0].TargetPort = intstr.FromInt32(8081)
	if _, err := env.Client.CoreV1().Services(ns).Update(ctxFor(t, apiTimeout), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSlice("port http at 8081", func(s *discoveryv1.EndpointSlice) bool {
		return lists(leader.id)(s) && len(s.Ports) == 2 && s.Ports[0].Port != nil && *s.Ports[0].Port == 8081
	})

	w.freeze(leader)
	var rest []*participant
	for _, p := range ps {
		if p != leader {
			rest = append(rest, p)
		}
	}
	next := w.waitLeader(settle, rest...)
	waitSlice(next.id+" listed while "+leader.id+" is frozen", lists(next.id))
	leader.thaw(t)
	// Its resync, and any write it had in flight, come within a TTL.
	time.Sleep(std.ttl + std.retry)
	waitSlice(next.id+" still listed once "+leader.id+" resumed", lists(next.id))

	routes.Close()
	for _, v := range routes.Check(ipOf).Violations {
		if strings.Contains(v, "10.9.9.9") {
			continue // the test's own write
		}
		t.Error(v)
	}
}
