package grants

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

func podWithElector(sa string, native bool, args ...string) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{"elector.vapor.io/lock-type": "endpoints"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "app", Args: []string{"-election=not-the-elector"}}},
		},
	}
	c := corev1.Container{Name: "elector", Image: "elector", Args: args,
		Env: []corev1.EnvVar{{Name: election.EnvPrefix + "LOCK_TYPE", Value: "endpoints"}}}
	if native {
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	} else {
		p.Spec.Containers = append(p.Spec.Containers, c)
	}
	return p
}

// TestDesiredRoleMatchesShippedRole keeps the reconciler and the standalone
// Role of config/elector, for the sample's election "example", from
// drifting apart.
func TestDesiredRoleMatchesShippedRole(t *testing.T) {
	roles, err := controlplane.ReadRoles("../../config/elector/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) == 0 {
		t.Fatal("config/elector/role.yaml has no Role")
	}
	a := Accounts(map[string][]Elector{"sa": {{Election: "example", LockType: election.LockLeases}}})[0]
	if diff := cmp.Diff(roles[0].Rules, DesiredRole("ns", a).Rules); diff != "" {
		t.Errorf("leases Role differs from config/elector/role.yaml's first Role (-shipped +reconciler):\n%s", diff)
	}
}

func TestDesiredObjects(t *testing.T) {
	lock := []string{"get", "update", "watch"}
	create := []string{"create"}
	events := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: create}
	locks := func(names ...string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{
			{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"locks"}, ResourceNames: names, Verbs: []string{"restricted"}},
			{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"locks"}, ResourceNames: []string{":create"}, Verbs: []string{"restricted"}},
		}
	}
	markers := func(keys, elections []string) []rbacv1.PolicyRule {
		return []rbacv1.PolicyRule{
			{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"podlabels"}, ResourceNames: keys, Verbs: []string{"update"}},
			{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"elections"}, ResourceNames: elections, Verbs: []string{"update"}},
		}
	}

	tests := []struct {
		name      string
		electors  []Elector
		wantRules []rbacv1.PolicyRule
		podLabel  bool
	}{
		{"one lease", []Elector{{Election: "a", LockType: election.LockLeases}}, append(append([]rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"a"}, Verbs: lock},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: create},
		}, locks("a")...), events), false},
		{"every lock type, sorted, each election once, pod-label markers", []Elector{
			{Election: "e", LockType: election.LockEndpoints},
			{Election: "b", LockType: election.LockLeases},
			{Election: "c", LockType: election.LockConfigMaps, PodLabel: "x/role"},
			{Election: "a", LockType: election.LockLeases, PodLabel: "role"},
			{Election: "b", LockType: election.LockLeases},
			{Election: "c", LockType: election.LockConfigMaps, PodLabel: "x/role"},
		}, slices.Concat([]rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"a", "b"}, Verbs: lock},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: create},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"c"}, Verbs: lock},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: create},
			{APIGroups: []string{""}, Resources: []string{"endpoints"}, ResourceNames: []string{"e"}, Verbs: lock},
			{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: create},
		}, locks("a", "b", "c", "e"), []rbacv1.PolicyRule{events}, markers([]string{"role", "x/role"}, []string{"a", "c"})), true},
		{"pod-deletion-cost: the election marker, no label key", []Elector{
			{Election: "a", LockType: election.LockLeases, PodDeletionCost: true},
			{Election: "b", LockType: election.LockLeases},
		}, slices.Concat([]rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"a", "b"}, Verbs: lock},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: create},
		}, locks("a", "b"), []rbacv1.PolicyRule{events}, markers(nil, []string{"a"})[1:]), true},
		{"leader-service: its Services and slices by name, slice create, the marker", []Elector{
			{Election: "a", LockType: election.LockLeases, LeaderService: "web-leader"},
			{Election: "b", LockType: election.LockLeases, LeaderService: "api-leader"},
			{Election: "a", LockType: election.LockLeases, LeaderService: "web-leader"},
			{Election: "c", LockType: election.LockLeases},
		}, slices.Concat([]rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"a", "b", "c"}, Verbs: lock},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: create},
		}, locks("a", "b", "c"), []rbacv1.PolicyRule{
			events,
			{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{"api-leader", "web-leader"}, Verbs: []string{"get"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, ResourceNames: []string{"api-leader", "web-leader"}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: create},
			{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"leaderservices"}, Verbs: []string{"restricted"}},
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accounts := Accounts(map[string][]Elector{"app": tt.electors})
			if len(accounts) != 1 {
				t.Fatalf("%d accounts, want 1", len(accounts))
			}
			a := accounts[0]
			role := DesiredRole("ns", a)
			if diff := cmp.Diff(tt.wantRules, role.Rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			subjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "app", Namespace: "ns"}}
			binding := DesiredRoleBinding("ns", a)
			if diff := cmp.Diff(subjects, binding.Subjects); diff != "" {
				t.Errorf("subjects (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "k8s-elector-app"}, binding.RoleRef); diff != "" {
				t.Errorf("roleRef (-want +got):\n%s", diff)
			}
			podLabel := DesiredPodLabelBinding("ns", a)
			if (podLabel != nil) != tt.podLabel {
				t.Fatalf("pod-label binding = %+v, want one: %v", podLabel, tt.podLabel)
			}
			objs := []metav1.ObjectMeta{role.ObjectMeta, binding.ObjectMeta}
			if podLabel != nil {
				if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "k8s-elector-pod-label"}, podLabel.RoleRef); diff != "" {
					t.Errorf("pod-label roleRef (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(subjects, podLabel.Subjects); diff != "" {
					t.Errorf("pod-label subjects (-want +got):\n%s", diff)
				}
				objs = append(objs, podLabel.ObjectMeta)
			}
			for _, m := range objs {
				if m.Labels[LabelManagedBy] != ManagedBy || m.Namespace != "ns" {
					t.Errorf("metadata = %+v, want namespace ns, labelled %s=%s", m, LabelManagedBy, ManagedBy)
				}
			}
		})
	}
}

func TestAccountsOnePerServiceAccount(t *testing.T) {
	got := Accounts(map[string][]Elector{
		"b": {{Election: "y", LockType: election.LockLeases}},
		"a": {{Election: "x", LockType: election.LockLeases}},
	})
	var names []string
	for _, a := range got {
		names = append(names, a.Name)
	}
	if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
		t.Errorf("accounts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"x"}, got[0].Elections[election.LockLeases]); diff != "" {
		t.Errorf("a's elections (-want +got):\n%s", diff)
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("a", 60)
	names := map[string]string{}
	for _, sa := range []string{"app", "pod-label", "x-pod-label", long + "1", long + "2", strings.Repeat("b", 253)} {
		for _, n := range []string{RoleName(sa), podLabelBindingName(sa)} {
			if len(n) > maxNameLen+len(":pod-label") {
				t.Errorf("name %q is %d characters", n, len(n))
			}
			if other, ok := names[n]; ok {
				t.Errorf("service accounts %q and %q share the name %q", other, sa, n)
			}
			names[n] = sa
		}
	}
	if got := RoleName("app"); got != "k8s-elector-app" {
		t.Errorf("RoleName(app) = %q, want k8s-elector-app", got)
	}
	if RoleName(long+"1") == RoleName(long+"2") {
		t.Errorf("long names that differ only past the limit share %q", RoleName(long+"1"))
	}
}

// reviewLeaderSlice is the EndpointSlice webhook's decision on pod writing
// addr into the slice of its -leader-service, a-leader.
func reviewLeaderSlice(pod *corev1.Pod, addr string) error {
	family := discoveryv1.AddressTypeIPv4
	if strings.Contains(addr, ":") {
		family = discoveryv1.AddressTypeIPv6
	}
	w := webhook.SliceWrite{
		Operation: admissionv1.Create,
		Namespace: "ns",
		User: authenticationv1.UserInfo{Username: "system:serviceaccount:ns:app", Extra: map[string]authenticationv1.ExtraValue{
			webhook.ExtraPodName: {pod.Name}, webhook.ExtraPodUID: {string(pod.UID)},
		}},
		Slice: &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "a-leader", Labels: map[string]string{election.LabelServiceName: "a-leader", election.LabelManagedBy: election.ManagedByElector}},
			AddressType: family,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{addr},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: pod.Name},
				NodeName:  &pod.Spec.NodeName,
			}},
		},
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "a-leader", Annotations: map[string]string{election.AnnotationElection: "a"}}}
	return webhook.ReviewEndpointSlice(w, pod, svc)
}
