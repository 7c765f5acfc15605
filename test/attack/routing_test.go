package attack

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// setIP gives a pod the IP a kubelet would, running: no kubelet runs here.
func (a *app) setIP(name, ip string) *corev1.Pod {
	a.t.Helper()
	ctx := ctxFor(a.t, 10*time.Second)
	var out *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := env.Client.CoreV1().Pods(a.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		out, err = env.Client.CoreV1().Pods(a.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		a.t.Fatalf("giving pod %s the IP %s: %v", name, ip, err)
	}
	return out
}

// leaderService makes, as the admin, a Service without a selector,
// annotated with election when it is not empty, as its owner would; edit
// changes it first.
func (a *app) leaderService(name, electionName string, edit ...func(*corev1.Service)) *corev1.Service {
	a.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if electionName != "" {
		svc.Annotations = map[string]string{election.AnnotationElection: electionName}
	}
	for _, e := range edit {
		e(svc)
	}
	out, err := env.Client.CoreV1().Services(a.ns).Create(ctxFor(a.t, 10*time.Second), svc, metav1.CreateOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	return out
}

// leaderSlice is the EndpointSlice an elector writes for svc: pod alone at
// ip, or no endpoint when pod is empty.
func leaderSlice(svc *corev1.Service, pod, ip string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:            svc.Name,
			Labels:          map[string]string{election.LabelServiceName: svc.Name, election.LabelManagedBy: election.ManagedByElector},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
	}
	if pod != "" {
		s.Endpoints = []discoveryv1.Endpoint{endpointOf(svc.Namespace, pod, ip)}
	}
	return s
}

func endpointOf(ns, pod, ip string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
	}
}

// writeSlice creates s as cs, or updates it over the version the admin
// reads when it exists.
func writeSlice(ctx context.Context, cs kubernetes.Interface, ns string, s *discoveryv1.EndpointSlice) error {
	cur, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, s, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	}
	s = s.DeepCopy()
	s.ResourceVersion = cur.ResourceVersion
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{})
	return err
}

// addresses reads the addresses a slice lists, as the admin.
func addresses(t *testing.T, ns, name string) []string {
	t.Helper()
	s, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctxFor(t, 10*time.Second), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ep := range s.Endpoints {
		out = append(out, ep.Addresses...)
	}
	return out
}

// TestLeaderServiceRoutesOnlyToItsOwnPod: an elector with -leader-service
// holds EndpointSlice create and update, which alone would let its token
// send a Service's traffic anywhere (CVE-2021-25740). With the injector's
// webhook, its pod's own bound token may list that pod's own IP, or
// nothing, in the slice of its Service, when the Service opted in to its
// election; and nothing else: not another IP, not another pod, not two
// endpoints, not another Service's slice, not a Service that did not opt
// in, not a slice someone else keeps, not with a token that is not its
// pod's. An account that writes EndpointSlices by a right of its own is
// not sent to the webhook at all.
func TestLeaderServiceRoutesOnlyToItsOwnPod(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 3*time.Minute)
	a.account("web")
	// Every pod of account web runs election web, each keeping the Service
	// of its -leader-service; web-batch runs another election, without.
	routed := func(svc string) map[string]string {
		return map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationLeaderService: svc}
	}
	ips := map[string]string{
		"web-0": "10.244.0.10", "web-1": "10.244.0.11", "web-batch": "10.244.0.12",
		"web-noopt": "10.244.0.13", "web-db": "10.244.0.14", "web-sel": "10.244.0.15", "web-take": "10.244.0.16",
	}
	pods := map[string]*corev1.Pod{}
	for name, svc := range map[string]string{
		"web-0": "web-leader", "web-1": "web-leader", "web-noopt": "noopt-leader", "web-db": "db-leader", "web-sel": "sel-leader", "web-take": "take-leader",
	} {
		a.pod(name, "web", routed(svc))
	}
	a.pod("web-batch", "web", map[string]string{webhook.AnnotationElection: "batch"})
	for name, ip := range ips {
		pods[name] = a.setIP(name, ip)
	}
	svc := a.leaderService("web-leader", "web")
	noOptIn := a.leaderService("noopt-leader", "")
	otherElection := a.leaderService("db-leader", "db")
	withSelector := a.leaderService("sel-leader", "web", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "web"} })
	take := a.leaderService("take-leader", "web")
	// A slice of take-leader that another controller keeps, made first.
	foreign := leaderSlice(take, "", "")
	foreign.Labels[election.LabelManagedBy] = "operator.example.com"
	foreign.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.244.9.9"}}}
	if _, err := env.Client.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The reconciler has seen every pod: the account holds all it will.
	a.barrier()

	asWeb0, asWeb1, asBatch := a.elector(pods["web-0"]), a.elector(pods["web-1"]), a.elector(pods["web-batch"])
	unbound, err := controlplane.Token(ctx, env.Client, a.ns, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	asWebUnbound := clientFor(t, unbound)
	own := func(pod string) *discoveryv1.EndpointSlice { return leaderSlice(svc, pod, ips[pod]) }

	t.Run("legitimate", func(t *testing.T) {
		allowed(t, "web-0 creating its Service's slice with its IP", writeSlice(ctx, asWeb0, a.ns, own("web-0")))
		if _, err := asWeb0.DiscoveryV1().EndpointSlices(a.ns).Get(ctx, "web-leader", metav1.GetOptions{}); err != nil {
			t.Errorf("web-0 reading its slice: %v", err)
		}
		if _, err := asWeb0.CoreV1().Services(a.ns).Get(ctx, "web-leader", metav1.GetOptions{}); err != nil {
			t.Errorf("web-0 reading its Service: %v", err)
		}
		allowed(t, "web-0 withdrawing its address", writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "", "")))
		allowed(t, "web-1, the next leader, listing its IP", writeSlice(ctx, asWeb1, a.ns, own("web-1")))
		allowed(t, "web-0, leader again, replacing web-1's IP with its own", writeSlice(ctx, asWeb0, a.ns, own("web-0")))
		withEpoch := own("web-0")
		withEpoch.Annotations = map[string]string{election.AnnotationEpoch: "4242"}
		allowed(t, "web-0 writing its epoch", writeSlice(ctx, asWeb0, a.ns, withEpoch))
	})

	// The API server's own address, from its kubernetes Service's slice.
	// Here it is a loopback address, which the API server's validation
	// refuses in any slice before a webhook is asked; a cluster's is not.
	kubernetesIP := "10.0.0.1"
	if ks, err := env.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err == nil && len(ks.Endpoints) > 0 {
		kubernetesIP = ks.Endpoints[0].Addresses[0]
	}
	byValidationIfLoopback := bySliceWebhook("is not an IP of pod web-0")
	if ip, err := netip.ParseAddr(kubernetesIP); err == nil && ip.IsLoopback() {
		byValidationIfLoopback = refusal{name: "the API server's validation of a loopback address", match: func(err error) bool {
			return apierrors.IsInvalid(err) && strings.Contains(err.Error(), "loopback")
		}}
	}

	notItsIP := bySliceWebhook("is not an IP of pod web-0")
	attacks := []struct {
		name string
		do   func() error
		by   []refusal
	}{
		{"lists another pod's IP", func() error {
			return writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "web-0", ips["web-1"]))
		}, []refusal{notItsIP}},
		{"lists the API server's IP", func() error {
			return writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "web-0", kubernetesIP))
		}, []refusal{byValidationIfLoopback}},
		{"lists 10.0.0.1", func() error {
			return writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "web-0", "10.0.0.1"))
		}, []refusal{notItsIP}},
		{"lists its IP as another pod's", func() error {
			return writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "web-1", ips["web-0"]))
		}, []refusal{bySliceWebhook("targetRef is Pod", "web-1", "it must be Pod", "web-0")}},
		{"lists another pod as itself, with that pod's IP", func() error {
			return writeSlice(ctx, asWeb0, a.ns, leaderSlice(svc, "web-1", ips["web-1"]))
		}, []refusal{bySliceWebhook("targetRef is Pod")}},
		{"lists two endpoints", func() error {
			s := own("web-0")
			s.Endpoints = append(s.Endpoints, endpointOf(a.ns, "web-0", ips["web-1"]))
			return writeSlice(ctx, asWeb0, a.ns, s)
		}, []refusal{bySliceWebhook("it lists 2 endpoints")}},
		{"lists two addresses", func() error {
			s := own("web-0")
			s.Endpoints[0].Addresses = append(s.Endpoints[0].Addresses, ips["web-1"])
			return writeSlice(ctx, asWeb0, a.ns, s)
		}, []refusal{bySliceWebhook("has 2 addresses")}},
		{"routes a Service that did not opt in", func() error {
			return writeSlice(ctx, a.elector(pods["web-noopt"]), a.ns, leaderSlice(noOptIn, "web-noopt", ips["web-noopt"]))
		}, []refusal{bySliceWebhook("has not opted in", "annotate Service noopt-leader with elector.vapor.io/election=web")}},
		{"withdraws from a Service that did not opt in", func() error {
			return writeSlice(ctx, a.elector(pods["web-noopt"]), a.ns, leaderSlice(noOptIn, "", ""))
		}, []refusal{bySliceWebhook("has not opted in")}},
		{"routes a Service of another election", func() error {
			return writeSlice(ctx, a.elector(pods["web-db"]), a.ns, leaderSlice(otherElection, "web-db", ips["web-db"]))
		}, []refusal{bySliceWebhook(`routes to the leader of election "db"`)}},
		{"routes a Service with a selector", func() error {
			return writeSlice(ctx, a.elector(pods["web-sel"]), a.ns, leaderSlice(withSelector, "web-sel", ips["web-sel"]))
		}, []refusal{bySliceWebhook("has a selector")}},
		{"creates the slice of another Service", func() error {
			s := leaderSlice(otherElection, "web-0", ips["web-0"])
			_, err := asWeb0.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, s, metav1.CreateOptions{})
			return err
		}, []refusal{bySliceWebhook("runs with -leader-service=web-leader, and may not write EndpointSlice db-leader")}},
		{"creates a slice of another name for its Service", func() error {
			s := own("web-0")
			s.Name = "web-leader-2"
			_, err := asWeb0.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, s, metav1.CreateOptions{})
			return err
		}, []refusal{bySliceWebhook("label kubernetes.io/service-name")}},
		{"adds a label", func() error {
			s := own("web-0")
			s.Labels["app"] = "web"
			return writeSlice(ctx, asWeb0, a.ns, s)
		}, []refusal{bySliceWebhook("labels app")}},
		{"hands the slice to the EndpointSlice controller", func() error {
			s := own("web-0")
			s.Labels[election.LabelManagedBy] = "endpointslice-controller.k8s.io"
			return writeSlice(ctx, asWeb0, a.ns, s)
		}, []refusal{bySliceWebhook("endpointslice.kubernetes.io/managed-by")}},
		{"takes over a slice another controller keeps", func() error {
			return writeSlice(ctx, a.elector(pods["web-take"]), a.ns, leaderSlice(take, "web-take", ips["web-take"]))
		}, []refusal{bySliceWebhook(`managed by "operator.example.com", not by an elector`)}},
		{"deletes its slice", func() error {
			return asWeb0.DiscoveryV1().EndpointSlices(a.ns).Delete(ctx, "web-leader", metav1.DeleteOptions{})
		}, []refusal{byRBAC("delete", "endpointslices")}},
		{"writes with a token not bound to a pod", func() error {
			return writeSlice(ctx, asWebUnbound, a.ns, own("web-0"))
		}, []refusal{bySliceWebhook("is not bound to a pod")}},
		{"writes with the token of its account's pod without -leader-service", func() error {
			return writeSlice(ctx, asBatch, a.ns, leaderSlice(svc, "web-batch", ips["web-batch"]))
		}, []refusal{bySliceWebhook("pod web-batch's elector runs without -leader-service")}},
		{"withdraws with the token of its account's pod without -leader-service", func() error {
			return writeSlice(ctx, asBatch, a.ns, leaderSlice(svc, "", ""))
		}, []refusal{bySliceWebhook("runs without -leader-service")}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "an elector account "+at.name, at.do(), at.by...)
		})
	}

	t.Run("an account with EndpointSlice rights of its own is not checked", func(t *testing.T) {
		// The deployer, a service account, given EndpointSlices by a Role
		// of its own, as an operator's account would be: its writes never
		// reach the injector, so they do not depend on it.
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "slices"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "create", "update"}}},
		}
		if _, err := env.Client.RbacV1().Roles(a.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "slices"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "slices"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "deployer", Namespace: a.ns}},
		}
		if _, err := env.Client.RbacV1().RoleBindings(a.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		s := leaderSlice(svc, "", "")
		s.Name = "operator-made"
		s.Labels = map[string]string{election.LabelServiceName: "web-leader", election.LabelManagedBy: "operator.example.com"}
		s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.10"}}}
		eventually(t, 30*time.Second, func() error {
			_, err := a.deployer.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, s, metav1.CreateOptions{})
			return err
		})
	})

	if got := addresses(t, a.ns, "web-leader"); len(got) != 1 || got[0] != ips["web-0"] {
		t.Errorf("EndpointSlice web-leader lists %v now, want web-0's %s alone", got, ips["web-0"])
	}
	if got := addresses(t, a.ns, "take-leader"); len(got) != 1 || got[0] != "10.244.9.9" {
		t.Errorf("the operator's EndpointSlice take-leader lists %v now", got)
	}
	for _, name := range []string{"noopt-leader", "db-leader", "sel-leader", "web-leader-2"} {
		if _, err := env.Client.DiscoveryV1().EndpointSlices(a.ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("EndpointSlice %s: %v, want NotFound", name, err)
		}
	}
}
