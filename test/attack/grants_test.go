package attack

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestGrantsGoToThePodsAccountOnly: a deployer may run a pod as any account
// of its namespace, a more privileged one included, and ask for an
// elector. That account is granted its election and nothing else, and the
// deployer itself nothing at all; no grant ever names a user, a group, or
// an account of another namespace.
func TestGrantsGoToThePodsAccountOnly(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, time.Minute)
	a.account("ci")
	ci := a.pod("ci-0", "ci", map[string]string{webhook.AnnotationElection: "ci", webhook.AnnotationPodLabel: roleKey})
	asCI := a.elector(ci)
	waitAllowed(t, asCI, a.ns, "update", "coordination.k8s.io", "leases", "ci")

	for _, r := range []struct{ verb, group, resource, name string }{
		{"update", "coordination.k8s.io", "leases", "ci"},
		{"create", "coordination.k8s.io", "leases", ""},
		{"create", "", "events", ""},
		{"update", "elector.vapor.io", "podlabels", roleKey},
	} {
		if can(t, a.deployer, a.ns, r.verb, r.group, r.resource, r.name) {
			t.Errorf("ATTACK SUCCEEDED: the deployer, by running a pod as ci, may %s %s %q", r.verb, r.resource, r.name)
		}
	}
	if can(t, asCI, a.ns, "update", "coordination.k8s.io", "leases", "other") {
		t.Error("ATTACK SUCCEEDED: ci may update a Lease of no election of its")
	}

	bindings, err := env.Client.RbacV1().RoleBindings("").List(ctx, metav1.ListOptions{
		LabelSelector: k8slabels.SelectorFromSet(k8slabels.Set{"app.kubernetes.io/managed-by": "k8s-elector-injector"}).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	mine := 0
	for _, b := range bindings.Items {
		if b.Namespace == a.ns {
			mine++
		}
		for _, s := range b.Subjects {
			if s.Kind != rbacv1.ServiceAccountKind || s.Namespace != b.Namespace {
				t.Errorf("RoleBinding %s/%s names %s %s/%s, not a service account of its namespace", b.Namespace, b.Name, s.Kind, s.Namespace, s.Name)
			}
		}
		if len(b.Subjects) != 1 {
			t.Errorf("RoleBinding %s/%s binds %d subjects, want one account", b.Namespace, b.Name, len(b.Subjects))
		}
	}
	if mine == 0 {
		t.Errorf("no RoleBinding labelled app.kubernetes.io/managed-by=k8s-elector-injector in %s, though ci may update its Lease", a.ns)
	}
}

// TestElectorCommandLineCannotBeEdited: the grants rest on the elector
// container's command line being fixed once the pod exists. The API
// server refuses to change it; the deployer may change the container's
// image (any pod's image is the deployer's to choose), which grants
// nothing new.
func TestElectorCommandLineCannotBeEdited(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, time.Minute)
	a.account("web")
	pod := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web"})
	path := ""
	for list, cs := range map[string][]corev1.Container{"initContainers": pod.Spec.InitContainers, "containers": pod.Spec.Containers} {
		for i, c := range cs {
			if c.Name == webhook.ContainerName {
				path = fmt.Sprintf("/spec/%s/%d", list, i)
			}
		}
	}
	if path == "" {
		t.Fatal("web-0 has no elector container")
	}
	jsonPatch := func(op map[string]any) error {
		body, err := json.Marshal([]map[string]any{op})
		if err != nil {
			return err
		}
		_, err = a.deployer.CoreV1().Pods(a.ns).Patch(ctx, "web-0", types.JSONPatchType, body, metav1.PatchOptions{})
		return err
	}
	err := jsonPatch(map[string]any{"op": "add", "path": path + "/args/-", "value": "-election=cert-manager-leader"})
	if err == nil || !apierrors.IsInvalid(err) {
		t.Errorf("ATTACK SUCCEEDED or refused for the wrong reason: the deployer adds -election to the elector's args: %v; want Invalid (pod updates may not change them)", err)
	}
	err = jsonPatch(map[string]any{"op": "replace", "path": path + "/args", "value": []string{"-election=web", "-http=:4040", "-lock-type=configmaps", "-pod-label=app"}})
	if err == nil || !apierrors.IsInvalid(err) {
		t.Errorf("ATTACK SUCCEEDED or refused for the wrong reason: the deployer rewrites the elector's args: %v; want Invalid (pod updates may not change them)", err)
	}
	// The same patch on a field a pod update may change goes through: the
	// refusals above are about the args.
	allowed(t, "the deployer changing the elector's image", jsonPatch(map[string]any{"op": "replace", "path": path + "/image", "value": "ghcr.io/vapor-ware/k8s-elector:other"}))
	a.barrier()
	cs := a.elector(a.get("web-0"))
	for _, r := range []struct{ verb, group, resource, name string }{
		{"update", "coordination.k8s.io", "leases", "cert-manager-leader"},
		{"update", "", "configmaps", "web"},
		{"patch", "", "pods", "web-0"},
	} {
		if can(t, cs, a.ns, r.verb, r.group, r.resource, r.name) {
			t.Errorf("ATTACK SUCCEEDED: after the edit, web may %s %s %q", r.verb, r.resource, r.name)
		}
	}
}

// TestGrantsEndWithThePods: an account's grant lasts while a pod of it
// runs an elector. A token minted once the pods are gone holds nothing.
func TestGrantsEndWithThePods(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, time.Minute)
	a.account("web")
	pod := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodLabel: roleKey})
	waitAllowed(t, a.elector(pod), a.ns, "update", "coordination.k8s.io", "leases", "web")
	if err := env.Client.CoreV1().Pods(a.ns).Delete(ctx, "web-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	token, err := controlplane.Token(ctx, env.Client, a.ns, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	cs := clientFor(t, token)
	eventually(t, 30*time.Second, func() error {
		for _, r := range []struct{ verb, group, resource, name string }{
			{"update", "coordination.k8s.io", "leases", "web"},
			{"create", "coordination.k8s.io", "leases", ""},
			{"patch", "", "pods", "web-0"},
		} {
			if can(t, cs, a.ns, r.verb, r.group, r.resource, r.name) {
				return fmt.Errorf("with its pod gone, web may still %s %s %q", r.verb, r.resource, r.name)
			}
		}
		return nil
	})
}

// TestFirstReleaseUnionRoleIsRemoved: a cluster upgraded from the first
// release still has its one Role k8s-elector per namespace, bound to every
// injected account, with the rights of all of them. The injector deletes
// it, so the hole it opened closes with the upgrade.
func TestFirstReleaseUnionRoleIsRemoved(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, time.Minute)
	a.account("a")
	a.account("b")
	managed := map[string]string{"app.kubernetes.io/managed-by": "k8s-elector-injector", "app.kubernetes.io/name": "k8s-elector"}
	union := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "k8s-elector", Labels: managed},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"endpoints"}, Verbs: []string{"get", "create", "update", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}},
		},
	}
	if _, err := env.Client.RbacV1().Roles(a.ns).Create(ctx, union, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "k8s-elector", Labels: managed},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "k8s-elector"},
		Subjects: []rbacv1.Subject{
			{Kind: rbacv1.ServiceAccountKind, Name: "a", Namespace: a.ns},
			{Kind: rbacv1.ServiceAccountKind, Name: "b", Namespace: a.ns},
		},
	}
	if _, err := env.Client.RbacV1().RoleBindings(a.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.pod("a-0", "a", map[string]string{webhook.AnnotationElection: "a"})
	b := a.pod("b-0", "b", map[string]string{webhook.AnnotationElection: "b"})
	asB := a.elector(b)
	waitAllowed(t, asB, a.ns, "update", "coordination.k8s.io", "leases", "b")
	eventually(t, 30*time.Second, func() error {
		_, errRole := env.Client.RbacV1().Roles(a.ns).Get(ctx, "k8s-elector", metav1.GetOptions{})
		_, errBinding := env.Client.RbacV1().RoleBindings(a.ns).Get(ctx, "k8s-elector", metav1.GetOptions{})
		if !apierrors.IsNotFound(errRole) || !apierrors.IsNotFound(errBinding) {
			return fmt.Errorf("the first release's Role (%v) and RoleBinding (%v) are still there", errRole, errBinding)
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		if can(t, asB, a.ns, "patch", "", "pods", "a-0") || can(t, asB, a.ns, "update", "", "endpoints", "a") {
			return fmt.Errorf("b still holds the first release's pods patch or endpoints update")
		}
		return nil
	})
}
