package elector

// Faults and bad input for -leader-service: each test states the guarantee
// it checks.

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

	"github.com/vapor-ware/k8s-elector/internal/routing"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// routedSetup makes the Service, watches the routes, and starts ids with
// -leader-service, each with its own IP unless ips names one.
func routedSetup(t *testing.T, ids []string, ips map[string]string) (string, *watcher, *routing.Log, map[string]string, []*participant) {
	t.Helper()
	ns, routes := routedNamespace(t)
	w := newWatcher(t, std.gap())
	ipOf := map[string]string{}
	var ps []*participant
	for i, id := range ids {
		ipOf[id] = fmt.Sprintf("10.3.0.%d", i+1)
		if ip, ok := ips[id]; ok {
			ipOf[id] = ip
		}
		ps = append(ps, w.start(id, adminKubeconfig, routedArgs(ns, id, ipOf[id])...))
	}
	return ns, w, routes, ipOf, ps
}

func sliceOf(t *testing.T, ns string) *discoveryv1.EndpointSlice {
	t.Helper()
	s, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// routesTo checks that the slice routes to ip alone.
func routesTo(t *testing.T, ns, ip string) func() error {
	return func() error {
		s, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		return listsOnly(s, ip)
	}
}

// listsOnly reports whether s routes to ip alone: one ready endpoint, one
// address, tied to the Service.
func listsOnly(s *discoveryv1.EndpointSlice, ip string) error {
	if len(s.Endpoints) != 1 || strings.Join(s.Endpoints[0].Addresses, ",") != ip {
		return fmt.Errorf("endpoints %+v, want %s alone", s.Endpoints, ip)
	}
	if c := s.Endpoints[0].Conditions; c.Ready == nil || !*c.Ready {
		return fmt.Errorf("endpoint %s is not ready: %+v", ip, c)
	}
	if s.Labels[discoveryv1.LabelServiceName] != leaderServiceName {
		return fmt.Errorf("label %s is %q: the Service does not use the slice", discoveryv1.LabelServiceName, s.Labels[discoveryv1.LabelServiceName])
	}
	return nil
}

// TestLeaderServiceSliceEditsRepaired checks "a deleted/edited slice is repaired
// within ~TTL": each edit leaves the leader's own address in place (or
// claims a newer term), and the leader must bring the slice back to its
// address alone, ready, tied to the Service, within a few resyncs.
func TestLeaderServiceSliceEditsRepaired(t *testing.T) {
	ns, w, routes, ipOf, ps := routedSetup(t, []string{"a", "b"}, nil)
	_ = routes
	leader := w.waitLeader(settle, ps...)
	ip := ipOf[leader.id]
	eventually(t, settle, routesTo(t, ns, ip))
	slices := env.Client.DiscoveryV1().EndpointSlices(ns)
	for _, tc := range []struct {
		name string
		edit func(*discoveryv1.EndpointSlice)
	}{
		{"a second endpoint beside the leader's", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.9.9.9"}})
		}},
		{"a second address in the leader's endpoint", func(s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Addresses = append(s.Endpoints[0].Addresses, "10.9.9.8")
		}},
		{"the leader's endpoint not ready", func(s *discoveryv1.EndpointSlice) {
			no := false
			s.Endpoints[0].Conditions.Ready = &no
		}},
		{"the service-name label removed", func(s *discoveryv1.EndpointSlice) {
			delete(s.Labels, discoveryv1.LabelServiceName)
		}},
		{"another address under a far-future epoch", func(s *discoveryv1.EndpointSlice) {
			s.Annotations[election.AnnotationEpoch] = "999999999999"
			s.Endpoints[0].Addresses = []string{"10.9.9.7"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, 3*std.ttl, func() error {
				if s := sliceOf(t, ns); s.Annotations[election.AnnotationEpoch] == "" || listsOnly(s, ip) != nil {
					return fmt.Errorf("the leader has not written the slice yet: %v", s.Annotations)
				}
				return nil
			})
			s := sliceOf(t, ns)
			epoch := s.Annotations[election.AnnotationEpoch]
			tc.edit(s)
			if _, err := slices.Update(ctxFor(t, apiTimeout), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3*std.ttl + loadSlack)
			var last error
			for time.Now().Before(deadline) {
				if last = listsOnly(sliceOf(t, ns), ip); last == nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("not repaired %s after the edit: %v", 3*std.ttl+loadSlack, last)
			// Put it right for the next case.
			s = sliceOf(t, ns)
			one := true
			s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &one}}}
			s.Labels[discoveryv1.LabelServiceName] = leaderServiceName
			s.Annotations[election.AnnotationEpoch] = epoch
			if _, err := slices.Update(ctxFor(t, apiTimeout), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 3*std.ttl+loadSlack, routesTo(t, ns, ip))
		})
	}
	if leader.Exited() {
		t.Errorf("leader %s exited:\n%s", leader.id, leader.Logs())
	}
}

// TestLeaderServiceSharedPodIP: two pods with one IP (hostNetwork pods on one
// node). A follower that starts with the leader's IP must not take the
// leader's address out of the Service: the slice must not go empty while
// the leader leads.
func TestLeaderServiceSharedPodIP(t *testing.T) {
	ns, w, routes, ipOf, ps := routedSetup(t, []string{"a"}, nil)
	a := w.waitLeader(settle, ps...)
	eventually(t, settle, routesTo(t, ns, ipOf[a.id]))
	b := w.start("b", adminKubeconfig, routedArgs(ns, "b", ipOf[a.id])...)
	// b's start-up withdrawal runs at once; a's resync repairs it within
	// a TTL.
	time.Sleep(std.ttl + 2*time.Second)
	if got := w.waitLeader(settle, a, b); got != a {
		t.Fatalf("leader %s, want a", got.id)
	}
	routes.Close()
	emptied := 0
	for _, line := range strings.Split(b.Logs(), "\n") {
		if strings.Contains(line, "removed the pod's address from the Service") {
			emptied++
			t.Errorf("follower b, starting with the leader's IP, emptied the leader's slice: %s", line)
		}
	}
	if r := routes.Check(map[string]string{"a": ipOf["a"]}); len(r.Gaps) > 0 || emptied > 0 {
		t.Logf("gaps without an endpoint while a led: %v", r.Gaps)
	}
}

// TestLeaderServiceBadPodIP: "bad pod IP gives a clear error". Addresses that
// net.ParseIP accepts but an EndpointSlice refuses must be refused at
// start, not leave a leader that holds the lock with a Service that never
// routes.
func TestLeaderServiceBadPodIP(t *testing.T) {
	for i, ip := range []string{"127.0.0.1", "169.254.1.1", "0.0.0.0", "::ffff:10.0.0.1", "224.0.0.1"} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ns := env.Namespace(t)
			createLeaderService(t, ns)
			code, out := runElector(t, append(routedArgs(ns, "a", ip), "-id=a", "-kubeconfig="+adminKubeconfig)...)
			if code == -1 {
				s, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
				var eps any = err
				if err == nil {
					eps = s.Endpoints
				}
				t.Errorf("-pod-ip=%s accepted: the elector ran 10s (slice: %v); its log ends:\n%s", ip, eps, lastLines(out, 3))
			}
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestLeaderServiceServiceChanges: the Service changed under a leader (a
// selector, ExternalName, a named targetPort, deleted) gives a clear error,
// no crash; once put back, the slice lists the leader again.
func TestLeaderServiceServiceChanges(t *testing.T) {
	ns, w, routes, ipOf, ps := routedSetup(t, []string{"a", "b"}, nil)
	leader := w.waitLeader(settle, ps...)
	eventually(t, settle, routesTo(t, ns, ipOf[leader.id]))
	services := env.Client.CoreV1().Services(ns)
	for _, tc := range []struct {
		name, wantLog string
		edit          func(*corev1.Service)
	}{
		{"selector", "has a selector", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "x"} }},
		{"named targetPort", "a name, which a Service without a selector cannot resolve", func(s *corev1.Service) {
			s.Spec.Ports[0].TargetPort.Type, s.Spec.Ports[0].TargetPort.StrVal = 1, "web"
		}},
		{"deleted", "not found", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(leader.Logs())
			if tc.edit == nil {
				if err := services.Delete(ctxFor(t, apiTimeout), leaderServiceName, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			} else {
				svc, err := services.Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				tc.edit(svc)
				if _, err := services.Update(ctxFor(t, apiTimeout), svc, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 2*std.ttl+loadSlack, func() error {
				if !strings.Contains(leader.Logs()[before:], tc.wantLog) {
					return fmt.Errorf("no %q in the leader's log yet", tc.wantLog)
				}
				return nil
			})
			t.Logf("slice while the Service is bad: %v", sliceOf(t, ns).Endpoints)
			// Put it back.
			if tc.edit == nil {
				createLeaderService(t, ns)
			} else {
				svc, err := services.Get(ctxFor(t, apiTimeout), leaderServiceName, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				orig := createLeaderServiceSpec()
				svc.Spec.Selector, svc.Spec.Ports = nil, orig.Ports
				if _, err := services.Update(ctxFor(t, apiTimeout), svc, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 2*std.ttl+12*time.Second, routesTo(t, ns, ipOf[leader.id]))
			if leader.Exited() {
				t.Fatalf("leader exited:\n%s", leader.Logs())
			}
		})
	}
	routes.Close()
	for _, v := range routes.Check(ipOf).Violations {
		t.Error(v)
	}
}

func createLeaderServiceSpec() corev1.ServiceSpec {
	svc := &corev1.Service{}
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}
	svc.Spec.Ports[0].TargetPort.IntVal = 8080
	return svc.Spec
}

// TestLeaderServiceFutureEpoch: one write of a far-future epoch on the slice (an
// admin's edit, a slice restored from another cluster's backup, a second
// election pointed at the same Service) and no leader of this election,
// this one or any after it, ever lists itself again, and none says why.
func TestLeaderServiceFutureEpoch(t *testing.T) {
	ns, w, routes, ipOf, ps := routedSetup(t, []string{"a", "b"}, nil)
	_ = routes
	leader := w.waitLeader(settle, ps...)
	eventually(t, settle, routesTo(t, ns, ipOf[leader.id]))
	s := sliceOf(t, ns)
	s.Annotations[election.AnnotationEpoch] = "999999999999"
	s.Endpoints = nil
	if _, err := env.Client.DiscoveryV1().EndpointSlices(ns).Update(ctxFor(t, apiTimeout), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next := w.waitLeader(settle, slices.DeleteFunc(ps, func(p *participant) bool { return p == leader })...)
	time.Sleep(3 * std.ttl)
	if err := routesTo(t, ns, ipOf[next.id])(); err != nil {
		t.Errorf("the next leader %s, %s after it led, is not listed: %v", next.id, 3*std.ttl, err)
		for _, line := range strings.Split(next.Logs(), "\n") {
			if strings.Contains(line, "service=leader") || strings.Contains(line, "epoch") {
				t.Logf("%s's log: %s", next.id, line)
			}
		}
	}
}

// TestLeaderServiceAddressFamily: the slice's addressType is immutable; a leader
// whose pod IP is of the other family than the slice's (a dual-stack
// cluster) cannot list itself until someone deletes the slice.
func TestLeaderServiceAddressFamily(t *testing.T) {
	ns, w, _, ipOf, ps := routedSetup(t, []string{"a"}, nil)
	a := w.waitLeader(settle, ps...)
	eventually(t, settle, routesTo(t, ns, ipOf["a"]))
	ipOf["b"] = "fd00::2"
	b := w.start("b", adminKubeconfig, routedArgs(ns, "b", ipOf["b"])...)
	if _, err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.waitLeader(settle, b)
	const says = "EndpointSlice leader holds IPv4 addresses, and this pod's IP fd00::2 is IPv6, which its addressType, fixed at creation, cannot change to: delete the slice"
	eventually(t, settle, func() error {
		if !strings.Contains(b.Logs(), says) {
			return fmt.Errorf("b (IPv6) leads over an IPv4 slice, and its log does not say %q", says)
		}
		return nil
	})
	if err := env.Client.DiscoveryV1().EndpointSlices(ns).Delete(ctxFor(t, apiTimeout), leaderServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, settle, routesTo(t, ns, ipOf["b"]))
}

// TestLeaderServiceServiceMissingAtStart: a leader whose Service does not exist
// yet says so clearly, keeps running, and lists itself once it exists.
func TestLeaderServiceServiceMissingAtStart(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	a := w.start("a", adminKubeconfig, routedArgs(ns, "a", "10.6.0.1")...)
	w.waitLeader(settle, a)
	eventually(t, settle, func() error {
		if !strings.Contains(a.Logs(), "service leader not found: create it with no selector") {
			return fmt.Errorf("no clear error yet")
		}
		return nil
	})
	time.Sleep(3 * std.ttl)
	created := time.Now()
	createLeaderService(t, ns)
	eventually(t, settle, routesTo(t, ns, "10.6.0.1"))
	t.Logf("listed %s after the Service was made; %d error lines before", time.Since(created).Round(time.Millisecond), strings.Count(a.Logs(), "level=ERROR"))
}
