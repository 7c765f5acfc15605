package webhook

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/test/testenv"
)

// shippedRoles reads config/elector/role.yaml: the elector's Role, then the
// Role for -pod-label.
func shippedRoles(t *testing.T) []rbacv1.Role {
	t.Helper()
	roles, err := testenv.ReadRoles("../../config/elector/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) != 2 {
		t.Fatalf("config/elector/role.yaml has %d Roles, want 2", len(roles))
	}
	return roles
}

func electorPod(sa string, annotations map[string]string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: annotations},
		Spec:       corev1.PodSpec{ServiceAccountName: sa},
	}
}

// TestDesiredRoleMatchesShippedRole keeps the reconciler and the standalone
// Role of config/elector from drifting apart.
func TestDesiredRoleMatchesShippedRole(t *testing.T) {
	shipped := shippedRoles(t)
	pod := electorPod("", map[string]string{AnnotationElection: "a"})
	if diff := cmp.Diff(shipped[0].Rules, DesiredRole("ns", []corev1.Pod{pod}, "").Rules); diff != "" {
		t.Errorf("leases Role differs from config/elector/role.yaml's first Role (-shipped +reconciler):\n%s", diff)
	}
	pod.Annotations[AnnotationPodLabel] = "example.com/role"
	want := append(shipped[0].Rules, shipped[1].Rules...)
	if diff := cmp.Diff(want, DesiredRole("ns", []corev1.Pod{pod}, "").Rules); diff != "" {
		t.Errorf("pod-label Role differs from config/elector/role.yaml's two Roles (-shipped +reconciler):\n%s", diff)
	}
}

func TestDesiredRole(t *testing.T) {
	lock := []string{"get", "create", "update", "watch"}
	events := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}}
	pods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}}
	leases := rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: lock}
	configmaps := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: lock}
	endpoints := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: lock}

	tests := []struct {
		name        string
		defaultLock election.LockType
		pods        []corev1.Pod
		want        []rbacv1.PolicyRule
	}{
		{"injector default", election.LockConfigMaps, []corev1.Pod{electorPod("", nil)}, []rbacv1.PolicyRule{configmaps, events}},
		{"annotation over default", election.LockConfigMaps, []corev1.Pod{electorPod("", map[string]string{AnnotationLockType: "endpoints"})}, []rbacv1.PolicyRule{endpoints, events}},
		{"every lock type in use, once each", "", []corev1.Pod{
			electorPod("", map[string]string{AnnotationLockType: "endpoints"}),
			electorPod("", nil),
			electorPod("", map[string]string{AnnotationLockType: "configmaps", AnnotationPodLabel: "x/role"}),
			electorPod("", map[string]string{AnnotationLockType: "leases"}),
		}, []rbacv1.PolicyRule{leases, configmaps, endpoints, events, pods}},
		{"invalid lock type grants nothing more", "", []corev1.Pod{
			electorPod("", nil),
			electorPod("", map[string]string{AnnotationLockType: "secrets"}),
		}, []rbacv1.PolicyRule{leases, events}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role := DesiredRole("ns", tt.pods, tt.defaultLock)
			if diff := cmp.Diff(tt.want, role.Rules); diff != "" {
				t.Errorf("rules (-want +got):\n%s", diff)
			}
			if role.Labels[LabelManagedBy] != ManagedBy || role.Name != RBACName || role.Namespace != "ns" {
				t.Errorf("metadata = %+v, want %s/%s labelled %s=%s", role.ObjectMeta, "ns", RBACName, LabelManagedBy, ManagedBy)
			}
		})
	}
}

func TestDesiredRoleBinding(t *testing.T) {
	got := DesiredRoleBinding("ns", []corev1.Pod{electorPod("b", nil), electorPod("", nil), electorPod("b", nil), electorPod("a", nil)})
	want := []rbacv1.Subject{
		{Kind: "ServiceAccount", Name: "a", Namespace: "ns"},
		{Kind: "ServiceAccount", Name: "b", Namespace: "ns"},
		{Kind: "ServiceAccount", Name: "default", Namespace: "ns"},
	}
	if diff := cmp.Diff(want, got.Subjects); diff != "" {
		t.Errorf("subjects (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: RBACName}, got.RoleRef); diff != "" {
		t.Errorf("roleRef (-want +got):\n%s", diff)
	}
}

// TestTrimPodKeepsWhatTheReconcilerReads checks that the cache's trimmed
// pods yield the same Role and RoleBinding as whole ones.
func TestTrimPodKeepsWhatTheReconcilerReads(t *testing.T) {
	pods := []corev1.Pod{
		electorPod("app", map[string]string{AnnotationElection: "a", AnnotationLockType: "configmaps", AnnotationPodLabel: "role"}),
		electorPod("", map[string]string{AnnotationElection: "b", "other.example.com/x": "y"}),
	}
	pods[0].Spec.Containers = []corev1.Container{{Name: "app", Image: "app"}}
	pods[1].Status.Phase = corev1.PodRunning
	var trimmed []corev1.Pod
	for _, p := range pods {
		out, err := trimPod(&p)
		if err != nil {
			t.Fatal(err)
		}
		trimmed = append(trimmed, *out.(*corev1.Pod))
	}
	if diff := cmp.Diff(DesiredRole("ns", pods, ""), DesiredRole("ns", trimmed, "")); diff != "" {
		t.Errorf("Role from trimmed pods (-whole +trimmed):\n%s", diff)
	}
	if diff := cmp.Diff(DesiredRoleBinding("ns", pods), DesiredRoleBinding("ns", trimmed)); diff != "" {
		t.Errorf("RoleBinding from trimmed pods (-whole +trimmed):\n%s", diff)
	}
	if len(trimmed[0].Spec.Containers) != 0 || trimmed[1].Annotations["other.example.com/x"] != "" {
		t.Errorf("trimPod kept what the reconciler does not read: %+v", trimmed)
	}
}
