package grants

import (
	"fmt"
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

func TestElectorOf(t *testing.T) {
	tests := []struct {
		name    string
		pod     corev1.Pod
		want    Elector
		found   bool
		wantErr string
	}{
		{"no elector container", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Args: []string{"-election=a"}}}}}, Elector{}, false, ""},
		{"native sidecar, lock type absent means leases, annotations and env ignored",
			podWithElector("", true, "-election=a", "-http=:4040"), Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"plain container, every flag", podWithElector("", false, "-election=a", "-lock-type=configmaps", "-pod-label=example.com/role"),
			Elector{Election: "a", LockType: election.LockConfigMaps, PodLabel: "example.com/role"}, true, ""},
		{"double dash, last wins as in Go's flag package", podWithElector("", true, "-election=a", "--election=b", "--lock-type=configmaps"),
			Elector{Election: "b", LockType: election.LockConfigMaps}, true, ""},
		{"a value in the next argument is not read", podWithElector("", true, "-election", "a"), Elector{LockType: election.LockLeases}, true, "is required"},
		{"three dashes are not a flag", podWithElector("", true, "-election=a", "---election=b"), Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"invalid lock type", podWithElector("", true, "-election=a", "-lock-type=secrets"), Elector{Election: "a", LockType: election.LockLeases}, true, `"secrets" is not a lock type`},
		{"invalid election", podWithElector("", true, "-election=A_b"), Elector{Election: "A_b", LockType: election.LockLeases}, true, "not a valid Kubernetes object name"},
		{"pod-deletion-cost, as the injector writes it", podWithElector("", true, "-election=a", "-pod-deletion-cost=true"),
			Elector{Election: "a", LockType: election.LockLeases, PodDeletionCost: true}, true, ""},
		{"pod-deletion-cost, other spellings grant nothing", podWithElector("", true, "-election=a", "-pod-deletion-cost", "-pod-deletion-cost=1"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"pod-deletion-cost, the last one wins", podWithElector("", true, "-election=a", "-pod-deletion-cost=true", "-pod-deletion-cost=false"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"invalid pod label", podWithElector("", true, "-election=a", "-pod-label=a b"), Elector{Election: "a", LockType: election.LockLeases, PodLabel: "a b"}, true, "is not a label key"},
		{"empty pod label", podWithElector("", true, "-election=a", "-pod-label="), Elector{Election: "a", LockType: election.LockLeases}, true, "is not a label key"},
		{"the injector's keys", podWithElector("", true, "-election=a", "-pod-label=elector.vapor.io/injected"),
			Elector{Election: "a", LockType: election.LockLeases, PodLabel: "elector.vapor.io/injected"}, true, "are the injector's"},
		{"leader-service, the last one wins", podWithElector("", true, "-election=a", "-leader-service=old", "--leader-service=web-leader"),
			Elector{Election: "a", LockType: election.LockLeases, LeaderService: "web-leader"}, true, ""},
		{"leader-service, a value in the next argument is not read", podWithElector("", true, "-election=a", "-leader-service", "web-leader"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"leader-service, not a Service name", podWithElector("", true, "-election=a", "-leader-service=web.leader"),
			Elector{Election: "a", LockType: election.LockLeases, LeaderService: "web.leader"}, true, "is not a Service name"},
		{"leader-service, empty", podWithElector("", true, "-election=a", "-leader-service="),
			Elector{Election: "a", LockType: election.LockLeases}, true, "is not a Service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := ElectorOf(&tt.pod)
			if found != tt.found {
				t.Errorf("found = %v, want %v", found, tt.found)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("elector (-want +got):\n%s", diff)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
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
		for _, n := range []string{RoleName(sa), PodLabelBindingName(sa)} {
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

// TestTrimPodKeepsWhatTheReconcilerReads checks that the cache's trimmed
// pods yield the same elector and account as whole ones, and count as
// outdated or not as whole ones do, and drop the rest.
func TestTrimPodKeepsWhatTheReconcilerReads(t *testing.T) {
	for _, native := range []bool{true, false} {
		pod := podWithElector("app", native, "-election=a", "-lock-type=configmaps", "-pod-label=role", "-leader-service=a-leader")
		pod.UID = "uid-p"
		pod.Namespace = "ns"
		pod.Spec.NodeName = "node-a"
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP = "10.1.2.3"
		pod.Status.PodIPs = []corev1.PodIP{{IP: "10.1.2.3"}, {IP: "fd00::3"}}
		pod.Status.HostIP = "192.0.2.1"
		pod.Labels = map[string]string{webhook.LabelInjected: "true", "app": "x"}
		marks := map[string]string{
			webhook.AnnotationStatus:          webhook.StatusInjected,
			webhook.AnnotationInjectorVersion: testVersion,
			webhook.AnnotationInjectedImage:   "example.com/elector:v2",
			webhook.AnnotationImage:           "example.com/elector:v2",
		}
		for k, v := range marks {
			pod.Annotations[k] = v
		}
		out, err := trimPod(&pod)
		if err != nil {
			t.Fatal(err)
		}
		trimmed := out.(*corev1.Pod)
		whole, _, _ := ElectorOf(&pod)
		got, found, err := ElectorOf(trimmed)
		if !found || err != nil {
			t.Fatalf("trimmed pod: found %v, err %v", found, err)
		}
		if diff := cmp.Diff(whole, got); diff != "" {
			t.Errorf("elector of the trimmed pod (-whole +trimmed):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]string{webhook.LabelInjected: "true"}, trimmed.Labels); diff != "" {
			t.Errorf("labels of the trimmed pod (-want +got):\n%s", diff)
		}
		if trimmed.Spec.ServiceAccountName != "app" || trimmed.Status.Phase != corev1.PodRunning {
			t.Errorf("trimmed pod lost its service account or phase: %+v", trimmed)
		}
		if diff := cmp.Diff(marks, trimmed.Annotations); diff != "" {
			t.Errorf("annotations of the trimmed pod (-want +got):\n%s", diff)
		}
		// The EndpointSlice webhook decides on the trimmed pod as on the
		// whole one, for the pod's own address and for another.
		for _, addr := range []string{"10.1.2.3", "fd00::3", "10.1.2.4", "192.0.2.1"} {
			wholeErr, trimmedErr := reviewLeaderSlice(&pod, addr), reviewLeaderSlice(trimmed, addr)
			if fmt.Sprint(wholeErr) != fmt.Sprint(trimmedErr) {
				t.Errorf("the webhook decides %s otherwise on the trimmed pod: %v, on the whole one: %v", addr, trimmedErr, wholeErr)
			}
			if allowed := wholeErr == nil; allowed != (addr == "10.1.2.3" || addr == "fd00::3") {
				t.Errorf("the webhook decides %s: %v", addr, wholeErr)
			}
		}
		if !counted(trimmed) || outdated(trimmed, testVersion, testImage) != outdated(&pod, testVersion, testImage) {
			t.Errorf("the trimmed pod is not counted as the whole one: counted %v, outdated %v, whole %v",
				counted(trimmed), outdated(trimmed, testVersion, testImage), outdated(&pod, testVersion, testImage))
		}
		if len(trimmed.Spec.Containers) != 1 || len(trimmed.Spec.InitContainers) != 0 || trimmed.Spec.Containers[0].Image != "" ||
			trimmed.Spec.Containers[0].Env != nil {
			t.Errorf("trimPod kept what the reconciler does not read: %+v", trimmed)
		}
	}

	// Without any of the annotations, it keeps none.
	pod := podWithElector("app", true, "-election=a")
	out, err := trimPod(&pod)
	if err != nil {
		t.Fatal(err)
	}
	if a := out.(*corev1.Pod).Annotations; a != nil {
		t.Errorf("trimPod kept annotations of a pod without marks: %v", a)
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
