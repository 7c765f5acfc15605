package injector

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestGrantsPerAccountPerElection: each service account that runs an
// elector gets a Role of its own naming exactly its lock objects, an
// account that runs none gets nothing, and an account's grants follow its
// pods.
func TestGrantsPerAccountPerElection(t *testing.T) {
	ns := env.Namespace(t)
	for _, sa := range []string{"a", "b", "c"} {
		serviceAccount(t, ns, sa)
	}
	ctx := ctxFor(t, 90*time.Second)
	createPod(t, ns, electorPod("a-x", "a", map[string]string{webhook.AnnotationElection: "x"}))
	createPod(t, ns, electorPod("a-y", "a", map[string]string{webhook.AnnotationElection: "y", webhook.AnnotationLockType: "configmaps"}))
	createPod(t, ns, electorPod("b-z", "b", map[string]string{webhook.AnnotationElection: "z", webhook.AnnotationPodLabel: "example.com/role"}))
	createPod(t, ns, electorPod("c-plain", "c", nil))

	a := []grants.Elector{{Election: "x", LockType: election.LockLeases}, {Election: "y", LockType: election.LockConfigMaps}}
	b := []grants.Elector{{Election: "z", LockType: election.LockLeases, PodLabel: "example.com/role"}}
	waitForGrants(t, ns, map[string][]grants.Elector{"a": a, "b": b})

	// The elector, as a, becomes leader of x.
	token, err := controlplane.Token(ctx, env.Client, ns, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := startElector(t, kubeconfigFor(t, token), ns, "x")
	eventually(t, 20*time.Second, func() error {
		st, err := status(addr)
		if err != nil {
			return err
		}
		if !st.IsLeader {
			return fmt.Errorf("not leader: %+v", st)
		}
		return nil
	})

	// a may not touch b's Lease, nor read Secrets; it may create a Lease
	// of any name (Kubernetes cannot limit create by name) but then not
	// read it.
	if _, err := env.Client.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "z"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	asA := clientFor(t, token)
	lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, "z", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asA.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a updating b's Lease z: err = %v, want Forbidden", err)
	}
	if _, err := asA.CoordinationV1().Leases(ns).Get(ctx, "z", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a reading b's Lease z: err = %v, want Forbidden", err)
	}
	if _, err := asA.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "free"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("a creating a Lease of another name: %v, want it allowed", err)
	}
	if _, err := asA.CoordinationV1().Leases(ns).Get(ctx, "free", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a reading the Lease it created under another name: err = %v, want Forbidden", err)
	}
	if _, err := asA.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets as a: err = %v, want Forbidden", err)
	}
	if _, err := asA.CoreV1().Pods(ns).Patch(ctx, "b-z", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a patching a pod: err = %v, want Forbidden", err)
	}

	// The grants follow the pods: a loses y with its pod, then everything.
	deletePod(t, ns, "a-y")
	waitForGrants(t, ns, map[string][]grants.Elector{"a": a[:1], "b": b})
	deletePod(t, ns, "a-x")
	waitForGrants(t, ns, map[string][]grants.Elector{"b": b})
	deletePod(t, ns, "b-z")
	waitForGrants(t, ns, nil)
}

// TestAnnotationAndLabelEditsChangeNothing: what a pod's annotations and
// labels say after admission grants nothing; only the elector's command
// line does.
func TestAnnotationAndLabelEditsChangeNothing(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 60*time.Second)
	createPod(t, ns, electorPod("app-0", "app", map[string]string{webhook.AnnotationElection: "x"}))
	want := map[string][]grants.Elector{"app": {{Election: "x", LockType: election.LockLeases}}}
	waitForGrants(t, ns, want)
	before, err := env.Client.RbacV1().Roles(ns).Get(ctx, grants.RoleName("app"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The reported attack: ask for Endpoints and pod labelling after
	// admission, and rename the election.
	patch := `{"metadata":{"annotations":{"elector.vapor.io/lock-type":"endpoints","elector.vapor.io/pod-label":"role","elector.vapor.io/election":"other"},"labels":{"role":"leader"}}}`
	if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, "app-0", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	syncReconciler(t, ns)
	waitForGrants(t, ns, want)
	after, err := env.Client.RbacV1().Roles(ns).Get(ctx, grants.RoleName("app"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the Role changed after an annotation edit: %+v -> %+v", before.Rules, after.Rules)
	}
}

// TestInjectedLabelIsKept: the policy k8s-elector-injected-label keeps the
// label the reconciler selects pods by from being removed, changed, or put
// on a pod without an elector.
func TestInjectedLabelIsKept(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	createPod(t, ns, electorPod("injected", "app", map[string]string{webhook.AnnotationElection: "x"}))
	createPod(t, ns, electorPod("plain", "app", nil))
	key := webhook.LabelInjected

	for _, tt := range []struct {
		name, pod, patch string
	}{
		{"removed", "injected", `{"metadata":{"labels":{"` + key + `":null}}}`},
		{"changed", "injected", `{"metadata":{"labels":{"` + key + `":"false"}}}`},
		{"added", "plain", `{"metadata":{"labels":{"` + key + `":"true"}}}`},
	} {
		_, err := env.Client.CoreV1().Pods(ns).Patch(ctx, tt.pod, types.MergePatchType, []byte(tt.patch), metav1.PatchOptions{})
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(fmt.Sprint(err), "k8s-elector-injected-label") {
			t.Errorf("label %s by a cluster admin: err = %v, want the policy k8s-elector-injected-label to deny it", tt.name, err)
		}
	}

	forged := electorPod("forged", "app", nil)
	forged.Labels = map[string]string{key: "true"}
	_, err := env.Client.CoreV1().Pods(ns).Create(ctx, forged, metav1.CreateOptions{})
	if !strings.Contains(fmt.Sprint(err), "k8s-elector-injected-label") {
		t.Errorf("creating a labelled pod without an elector: err = %v, want the policy to deny it", err)
	}
}

// TestOwnElectorContainerIsGrantedItsCommandLine: a pod with an elector
// container of its own, labelled at creation, is granted what that
// container runs; a lock type the injector does not allow gets one Event
// on the pod and nothing else.
func TestOwnElectorContainerIsGrantedItsCommandLine(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "own")
	serviceAccount(t, ns, "ep")
	ctx := ctxFor(t, 60*time.Second)
	createPod(t, ns, ownElectorPod("own-0", "own", "-election=mine", "-lock-type=configmaps"))
	createPod(t, ns, ownElectorPod("ep-0", "ep", "-election=steer", "-lock-type=endpoints"))
	waitForGrants(t, ns, map[string][]grants.Elector{"own": {{Election: "mine", LockType: election.LockConfigMaps}}})

	// More events for ep-0, then one Event for it in all.
	for i := range 3 {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"poke":"%d"}}}`, i)
		if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, "ep-0", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	syncReconciler(t, ns)
	events := eventsFor(t, ns, grants.ReasonNotGranted)
	if len(events) != 1 || events[0].Regarding.Name != "ep-0" || events[0].Series != nil || !strings.Contains(events[0].Note, "endpoints") {
		t.Errorf("events %s = %+v, want one about pod ep-0 and endpoints", grants.ReasonNotGranted, events)
	}
	if _, err := env.Client.RbacV1().Roles(ns).Get(ctx, grants.RoleName("ep"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the account of an Endpoints elector has a Role: err = %v, want not found", err)
	}
}

// TestPodLabellingIsNotPodPatching: an account whose elector labels its pod
// may set that label, to leader or standby, on pods of its election, and
// nothing else; the elector itself does so.
func TestPodLabellingIsNotPodPatching(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "labeller")
	serviceAccount(t, ns, "other")
	ctx := ctxFor(t, 90*time.Second)
	const key = "example.com/role"
	labelled := func(election string) map[string]string {
		return map[string]string{webhook.AnnotationElection: election, webhook.AnnotationPodLabel: key}
	}
	createPod(t, ns, electorPod("l-0", "labeller", labelled("e")))
	createPod(t, ns, electorPod("l-1", "labeller", labelled("e")))
	createPod(t, ns, electorPod("o-0", "other", labelled("f")))
	createPod(t, ns, electorPod("plain", "other", nil))
	waitForGrants(t, ns, map[string][]grants.Elector{
		"labeller": {{Election: "e", LockType: election.LockLeases, PodLabel: key}},
		"other":    {{Election: "f", LockType: election.LockLeases, PodLabel: key}},
	})
	token, err := controlplane.Token(ctx, env.Client, ns, "labeller", nil)
	if err != nil {
		t.Fatal(err)
	}
	sa := clientFor(t, token)
	label := func(k, v string) string { return fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, k, v) }

	for _, tt := range []struct {
		name, pod, patch string
		allowed          bool
	}{
		{"its label to leader", "l-1", label(key, "leader"), true},
		{"its label to standby", "l-1", label(key, "standby"), true},
		{"its label to another value", "l-1", label(key, "boss"), false},
		{"another label", "l-1", label("app", "x"), false},
		{"the injected label", "l-1", label(webhook.LabelInjected, "leader"), false},
		{"an annotation", "l-1", `{"metadata":{"annotations":{"a":"b"}}}`, false},
		{"the app's image", "l-1", `{"spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9"}]}}`, false},
		{"a pod of another election", "o-0", label(key, "leader"), false},
		{"a pod without an elector", "plain", label(key, "leader"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sa.CoreV1().Pods(ns).Patch(ctx, tt.pod, types.StrategicMergePatchType, []byte(tt.patch), metav1.PatchOptions{})
			if tt.allowed && err != nil {
				t.Errorf("denied: %v", err)
			}
			// The injected label is also kept by k8s-elector-injected-label,
			// which may answer first.
			if !tt.allowed && !strings.Contains(fmt.Sprint(err), "ValidatingAdmissionPolicy 'k8s-elector-") {
				t.Errorf("err = %v, want the policy k8s-elector-pod-label to deny it", err)
			}
		})
	}

	// Bound to the ClusterRole by hand, an account that runs no elector is
	// restricted as well: the restriction comes with pods patch.
	serviceAccount(t, ns, "bystander")
	if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bystander-pod-label"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: grants.PodLabelClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bystanderToken, err := controlplane.Token(ctx, env.Client, ns, "bystander", nil)
	if err != nil {
		t.Fatal(err)
	}
	bystander := clientFor(t, bystanderToken)
	eventually(t, 10*time.Second, func() error {
		_, err := bystander.CoreV1().Pods(ns).Patch(ctx, "plain", types.StrategicMergePatchType,
			[]byte(`{"spec":{"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9"}]}}`), metav1.PatchOptions{})
		if !strings.Contains(fmt.Sprint(err), "ValidatingAdmissionPolicy 'k8s-elector-pod-label'") {
			return fmt.Errorf("an account bound to %s changing an image: err = %v, want the policy to deny it", grants.PodLabelClusterRole, err)
		}
		return nil
	})

	// A cluster admin holds every marker through a wildcard, and is not restricted.
	if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, "l-1", types.MergePatchType, []byte(`{"metadata":{"annotations":{"a":"b"}}}`), metav1.PatchOptions{}); err != nil {
		t.Errorf("a cluster admin annotating a pod: %v", err)
	}

	// The elector labels its own pod.
	startElector(t, kubeconfigFor(t, token), ns, "e", "-"+election.FlagPodLabel+"="+key, "-"+election.FlagPodName+"=l-0")
	eventually(t, 20*time.Second, func() error {
		pod, err := env.Client.CoreV1().Pods(ns).Get(ctx, "l-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.Labels[key] != "leader" {
			return fmt.Errorf("pod l-0 labels %v, want %s=leader", pod.Labels, key)
		}
		return nil
	})
}

// TestForeignObjectGetsOneEvent: a Role with the name of an account's Role
// that the reconciler did not make is reported once and left alone, is not
// read again on every pod event, and is replaced once deleted.
func TestForeignObjectGetsOneEvent(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 90*time.Second)
	name := grants.RoleName("app")
	user := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"owner": "me"}},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
	}
	user, err := env.Client.RbacV1().Roles(ns).Create(ctx, user, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	createPod(t, ns, electorPod("app-0", "app", map[string]string{webhook.AnnotationElection: "x"}))
	eventually(t, 20*time.Second, func() error {
		if n := len(eventsFor(t, ns, grants.ReasonNotManaged)); n == 0 {
			return fmt.Errorf("no %s Event", grants.ReasonNotManaged)
		}
		return nil
	})

	// Ten pod events, each a reconcile of the namespace.
	for i := range 10 {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"poke":"%d"}}}`, i)
		if _, err := env.Client.CoreV1().Pods(ns).Patch(ctx, "app-0", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	syncReconciler(t, ns)

	events := eventsFor(t, ns, grants.ReasonNotManaged)
	if len(events) != 1 || events[0].Regarding.Kind != "Role" || events[0].Regarding.Name != name || events[0].Series != nil {
		t.Errorf("events %s = %+v, want one, about the Role %s, without a series", grants.ReasonNotManaged, events, name)
	}
	k := "Role/" + ns + "/" + name
	// One create, answered AlreadyExists; one read of the foreign Role, or
	// two if the first backoff (10s) passed meanwhile.
	if c, g := reconcilerCalls.count("create", k), reconcilerCalls.count("get", k); c != 1 || g < 1 || g > 2 {
		t.Errorf("the reconciler created %s %d times and read it %d times, want 1 and 1-2: a loop on pod events", k, c, g)
	}
	got, err := env.Client.RbacV1().Roles(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != user.ResourceVersion {
		t.Errorf("the user's Role was changed: resourceVersion %s -> %s, rules %+v", user.ResourceVersion, got.ResourceVersion, got.Rules)
	}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a RoleBinding to the user's Role was made: err = %v, want not found", err)
	}

	// Deleted, it is replaced by the reconciler's after the backoff.
	if err := env.Client.RbacV1().Roles(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForGrantsWithin(t, ns, map[string][]grants.Elector{"app": {{Election: "x", LockType: election.LockLeases}}}, time.Minute)
}

// TestFirstReleaseObjectsAreRemoved: the first release's per-namespace
// Role and RoleBinding k8s-elector, labelled as the injector's, go.
func TestFirstReleaseObjectsAreRemoved(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	meta := metav1.ObjectMeta{Name: grants.LegacyName, Labels: map[string]string{grants.LabelManagedBy: grants.ManagedBy}}
	if _, err := env.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: meta,
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update", "watch"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: grants.LegacyName},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "app", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, ns, electorPod("app-0", "app", map[string]string{webhook.AnnotationElection: "x"}))
	waitForGrants(t, ns, map[string][]grants.Elector{"app": {{Election: "x", LockType: election.LockLeases}}})
}

// waitForGrants waits until the reconciler's Roles and RoleBindings in ns
// are exactly those for electors, by service account.
func waitForGrants(t *testing.T, ns string, electors map[string][]grants.Elector) {
	t.Helper()
	waitForGrantsWithin(t, ns, electors, 20*time.Second)
}

func waitForGrantsWithin(t *testing.T, ns string, electors map[string][]grants.Elector, timeout time.Duration) {
	t.Helper()
	wantRoles := map[string]rbacv1.Role{}
	wantBindings := map[string]rbacv1.RoleBinding{}
	for _, a := range grants.Accounts(electors) {
		r := grants.DesiredRole(ns, a)
		wantRoles[r.Name] = *r
		for _, b := range []*rbacv1.RoleBinding{grants.DesiredRoleBinding(ns, a), grants.DesiredPodLabelBinding(ns, a)} {
			if b != nil {
				wantBindings[b.Name] = *b
			}
		}
	}
	ctx := ctxFor(t, timeout+5*time.Second)
	managed := metav1.ListOptions{LabelSelector: grants.LabelManagedBy + "=" + grants.ManagedBy}
	eventually(t, timeout, func() error {
		roles, err := env.Client.RbacV1().Roles(ns).List(ctx, managed)
		if err != nil {
			return err
		}
		bindings, err := env.Client.RbacV1().RoleBindings(ns).List(ctx, managed)
		if err != nil {
			return err
		}
		gotRoles := map[string]rbacv1.Role{}
		for _, r := range roles.Items {
			gotRoles[r.Name] = rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: r.Name}, Rules: r.Rules}
		}
		gotBindings := map[string]rbacv1.RoleBinding{}
		for _, b := range bindings.Items {
			gotBindings[b.Name] = rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: b.Name}, RoleRef: b.RoleRef, Subjects: b.Subjects}
		}
		for n, r := range wantRoles {
			wantRoles[n] = rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: n}, Rules: r.Rules}
		}
		for n, b := range wantBindings {
			wantBindings[n] = rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: n}, RoleRef: b.RoleRef, Subjects: b.Subjects}
		}
		if diff := cmp.Diff(wantRoles, gotRoles); diff != "" {
			return fmt.Errorf("Roles (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantBindings, gotBindings); diff != "" {
			return fmt.Errorf("RoleBindings (-want +got):\n%s", diff)
		}
		return nil
	})
}

// syncReconciler returns once the reconciler has seen every pod event in ns
// so far: it creates a pod for a new service account and waits for that
// account's RoleBinding. The pod informer delivers events in order, so a
// reconcile that sees the new pod saw the earlier events too. The pod is
// then deleted, and its account's grants go soon after.
func syncReconciler(t *testing.T, ns string) {
	t.Helper()
	sa := fmt.Sprintf("sync-%d", time.Now().UnixNano()%1e9)
	serviceAccount(t, ns, sa)
	createPod(t, ns, electorPod(sa, sa, map[string]string{webhook.AnnotationElection: "sync"}))
	ctx := ctxFor(t, 25*time.Second)
	eventually(t, 20*time.Second, func() error {
		_, err := env.Client.RbacV1().RoleBindings(ns).Get(ctx, grants.RoleName(sa), metav1.GetOptions{})
		return err
	})
	deletePod(t, ns, sa)
}

func createPod(t *testing.T, ns string, pod *corev1.Pod) {
	t.Helper()
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 10*time.Second), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", pod.Name, err)
	}
}

func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	if err := env.Client.CoreV1().Pods(ns).Delete(ctxFor(t, 10*time.Second), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
}

// ownElectorPod is a pod with an elector container of its own, not
// injected, labelled injected at creation as the policy allows.
func ownElectorPod(name, sa string, args ...string) *corev1.Pod {
	pod := electorPod(name, sa, nil)
	pod.Labels = map[string]string{webhook.LabelInjected: "true"}
	c := pod.Spec.Containers[0]
	c.Name, c.Args = webhook.ContainerName, args
	pod.Spec.Containers = append(pod.Spec.Containers, c)
	return pod
}

// eventsFor lists the Events of ns with reason.
func eventsFor(t *testing.T, ns, reason string) []eventSummary {
	t.Helper()
	list, err := env.Client.EventsV1().Events(ns).List(ctxFor(t, 10*time.Second), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", reason).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventSummary
	for _, e := range list.Items {
		out = append(out, eventSummary{Regarding: e.Regarding, Note: e.Note, Series: e.Series})
	}
	return out
}

type eventSummary struct {
	Regarding corev1.ObjectReference
	Note      string
	Series    *eventsv1.EventSeries
}

// apiCalls counts the reconciler's creates and direct reads, by
// Kind/namespace/name.
type apiCalls struct {
	mu sync.Mutex
	n  map[string]int
}

var reconcilerCalls = &apiCalls{n: map[string]int{}}

func (c *apiCalls) add(op string, obj client.Object) {
	kind := "Role"
	if _, ok := obj.(*rbacv1.RoleBinding); ok {
		kind = "RoleBinding"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[op+" "+kind+"/"+obj.GetNamespace()+"/"+obj.GetName()]++
}

func (c *apiCalls) count(op, key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[op+" "+key]
}

func (c *apiCalls) client(cl client.Client) client.Client { return countingClient{cl, c} }

func (c *apiCalls) reader(r client.Reader) client.Reader { return countingReader{r, c} }

type countingClient struct {
	client.Client
	calls *apiCalls
}

func (cc countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	cc.calls.add("create", obj)
	return cc.Client.Create(ctx, obj, opts...)
}

type countingReader struct {
	client.Reader
	calls *apiCalls
}

func (cr countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	obj.SetNamespace(key.Namespace)
	obj.SetName(key.Name)
	cr.calls.add("get", obj)
	return cr.Reader.Get(ctx, key, obj, opts...)
}

// startElector runs the elector binary, with extra flags, and returns the
// address of its HTTP API.
func startElector(t *testing.T, kubeconfig, ns, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"-" + election.FlagElection + "=" + name, "-" + election.FlagNamespace + "=" + ns,
		"-id=test", "-kubeconfig=" + kubeconfig, "-http=127.0.0.1:0", "-ttl=3s"}, extra...)
	cmd := exec.Command(electorBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var log strings.Builder // written until Kill returns
	p, addr, err := controlplane.StartElector(context.Background(), cmd, &log, nil, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("elector logs:\n%s", log.String())
		}
	})
	return addr
}

func status(addr string) (election.Status, error) {
	return controlplane.ElectorStatus(context.Background(), nil, addr)
}

// waitForPolicies waits until the API server enforces the policies of
// config/policy, which it loads a moment after they are created.
func waitForPolicies(ctx context.Context, injector kubernetes.Interface) error {
	// The injector's account: it exists before any controller runs.
	forged := electorPod("forged", "k8s-elector-injector", nil)
	forged.Labels = map[string]string{webhook.LabelInjected: "true"}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, errLabel := env.Client.CoreV1().Pods(systemNamespace).Create(ctx, forged, dry)
		_, errInjector := injector.CoreV1().ConfigMaps(systemNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, dry)
		if apierrors.IsForbidden(errLabel) && apierrors.IsForbidden(errInjector) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the policies of config/policy are not enforced after 30s: a forged label: %v; a ConfigMap by the injector: %v", errLabel, errInjector)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
