//lint:file-ignore SA1019 Endpoints are a lock type under attack.

package attack

import (
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestElectionsWork: with nothing but the grants the injector made, each
// lock type allowed by default runs a whole election, pod labels and
// Events included.
func TestElectionsWork(t *testing.T) {
	for _, lockType := range []string{"leases", "configmaps"} {
		t.Run(lockType, func(t *testing.T) {
			a := newApp(t)
			a.account("web")
			electAndHandOver(t, a, "web", "web", map[string]string{webhook.AnnotationLockType: lockType})
		})
	}
}

// TestEndpointsLocksAreOptIn: an elector allowed to update an Endpoints
// object can steer a Service's traffic, so the lock type is refused at
// admission, with the flag that allows it named, until the cluster admin
// turns it on with the shipped component. Then it works, and still reaches
// no other Endpoints: not a Service's of its namespace, not the API
// server's own.
func TestEndpointsLocksAreOptIn(t *testing.T) {
	a := newApp(t)
	a.account("web")
	ctx := ctxFor(t, 5*time.Minute)
	_, err := a.createPod("web-0", "web", map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationLockType: "endpoints"})
	refused(t, "a pod asks for an Endpoints lock from the default injector", err, byWebhook("endpoints", "-allowed-lock-types"))

	component, err := componentFor("allowed-lock-types", "endpoints")
	if err != nil {
		t.Fatal(err)
	}
	useInjector(t, component, nil)
	service := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: a.ns},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.10"}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 80}},
		}},
	}
	if _, err := env.Client.CoreV1().Endpoints(a.ns).Create(ctx, service, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("legitimate", func(t *testing.T) {
		electAndHandOver(t, a, "web", "web", map[string]string{webhook.AnnotationLockType: "endpoints"})
	})

	cs := a.elector(a.get("web-0"))
	inj := injectorClient(t)
	steer := func(ns, name string) func() error {
		return func() error {
			ep, err := env.Client.CoreV1().Endpoints(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			ep.Subsets = []corev1.EndpointSubset{{
				Addresses: []corev1.EndpointAddress{{IP: "192.0.2.66"}},
				Ports:     []corev1.EndpointPort{{Name: "https", Port: 443}},
			}}
			_, err = cs.CoreV1().Endpoints(ns).Update(ctx, ep, metav1.UpdateOptions{})
			return err
		}
	}
	t.Run("the elector steers a Service of its namespace", func(t *testing.T) {
		refused(t, "an Endpoints elector rewrites Endpoints frontend", steer(a.ns, "frontend")(), byRBAC("update", "endpoints"))
	})
	t.Run("the elector steers the API server's Service", func(t *testing.T) {
		refused(t, "an Endpoints elector rewrites default/kubernetes", steer("default", "kubernetes")(), byRBAC("update", "endpoints"))
	})
	cs = inj
	t.Run("the injector steers the API server's Service", func(t *testing.T) {
		refused(t, "the injector's token, with Endpoints on, rewrites default/kubernetes", steer("default", "kubernetes")(),
			byRBAC("update", "endpoints"), byPolicy(policyPrefix))
	})
	t.Run("the injector steers a Service of an app", func(t *testing.T) {
		refused(t, "the injector's token, with Endpoints on, rewrites an app's Endpoints", steer(a.ns, "frontend")(),
			byRBAC("update", "endpoints"), byPolicy(policyPrefix))
	})
}

// TestLockTypeDefaultChangeKeepsRunningPods: the injector's -lock-type
// default applies to pods injected after it changed. A pod injected
// before runs the lock its elector container names (or the elector's
// default, leases), and must keep the rights to it; the first release
// recomputed them from the new default and left running electors
// forbidden.
func TestLockTypeDefaultChangeKeepsRunningPods(t *testing.T) {
	a := newApp(t)
	a.account("old")
	a.account("new")
	ctx := ctxFor(t, 3*time.Minute)
	old := a.pod("old-0", "old", map[string]string{webhook.AnnotationElection: "old", webhook.AnnotationPodLabel: roleKey})
	asOld := a.elector(old)
	waitAllowed(t, asOld, a.ns, "update", "coordination.k8s.io", "leases", "old")

	useInjector(t, "", map[string]string{"-lock-type": "configmaps"})
	a.barrier()
	newPod := a.pod("new-0", "new", map[string]string{webhook.AnnotationElection: "new"})
	waitAllowed(t, a.elector(newPod), a.ns, "update", "", "configmaps", "new")

	// The running elector still renews its Lease and labels its pod.
	lease, err := asOld.CoordinationV1().Leases(a.ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "old"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: new("old-0")},
	}, metav1.CreateOptions{})
	allowed(t, "the running elector creating its Lease", err)
	if err == nil {
		lease.Spec.LeaseDurationSeconds = new(int32(10))
		_, err = asOld.CoordinationV1().Leases(a.ns).Update(ctx, lease, metav1.UpdateOptions{})
		allowed(t, "the running elector renewing its Lease", err)
	}
	allowed(t, "the running elector labelling its pod", mergePatch(ctx, asOld, a.ns, "old-0", labels(map[string]any{roleKey: "leader"})))
	s := runSidecar(t, a.get("old-0"))
	if leader(t, s) != s {
		t.Error("the running elector does not lead its election")
	}
}

// TestLockNamedLikeAnotherObject: the election names the lock object, so a
// deployer can name an object that is no lock: the app's settings
// ConfigMap, or kube-root-ca.crt, the CA bundle every pod of the namespace
// trusts. The pod may be refused; if it is not, its elector may still
// change nothing in the object's data, nor delete it.
func TestLockNamedLikeAnotherObject(t *testing.T) {
	a := newApp(t)
	a.account("web")
	ctx := ctxFor(t, 2*time.Minute)
	victims := map[string]map[string]string{
		"app-settings":     {"database": "prod.example:5432"},
		"kube-root-ca.crt": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
	}
	for name, data := range victims {
		victimConfigMap(t, a.ns, name, data)
	}
	for name, data := range victims {
		t.Run(name, func(t *testing.T) {
			pod, err := a.createPod("lock-"+name[:3], "web", map[string]string{webhook.AnnotationElection: name, webhook.AnnotationLockType: "configmaps"})
			if err != nil {
				refused(t, "a pod whose election names ConfigMap "+name, err, byWebhook(name), byPolicy(policyPrefix))
				return
			}
			cs := a.elector(pod)
			waitAllowed(t, cs, a.ns, "update", "", "configmaps", name)
			cm, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k := range cm.Data {
				cm.Data[k] = "attacker"
			}
			_, err = cs.CoreV1().ConfigMaps(a.ns).Update(ctx, cm, metav1.UpdateOptions{})
			refused(t, "an elector rewrites the data of ConfigMap "+name, err, byPolicy(policyPrefix))
			err = cs.CoreV1().ConfigMaps(a.ns).Delete(ctx, name, metav1.DeleteOptions{})
			refused(t, "an elector deletes ConfigMap "+name, err, byRBAC("delete", "configmaps"))
			got, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range data {
				if got.Data[k] != v {
					t.Errorf("ConfigMap %s has %s=%q now", name, k, got.Data[k])
				}
			}
		})
	}
}

// TestForeignLocksAreNotElections: the pod author names the election, and
// so may name the lock of another controller of its namespace: cert-
// manager's Lease, or the ConfigMap an older client-go controller keeps its
// leader annotation on. The elector's account is then granted update on
// it by name, but an elector may take over only a lock that an elector
// wrote: one whose managedFields name the manager k8s-elector (this
// elector's user agent) or elector (the upstream vapor-ware elector's,
// whose locks a cluster that upgrades keeps using).
func TestForeignLocksAreNotElections(t *testing.T) {
	a := newApp(t)
	a.account("web")
	ctx := ctxFor(t, 3*time.Minute)
	victimLease(t, a.ns, "cert-manager-leader")
	record := func(holder string) string {
		return fmt.Sprintf(`{"holderIdentity":%q,"leaseDurationSeconds":15,"acquireTime":"2026-01-01T00:00:00Z","renewTime":"2026-01-01T00:00:00Z","leaderTransitions":0}`, holder)
	}
	oldLock := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ingress-controller-leader", Annotations: map[string]string{election.LeaderAnnotation: record("victim")}}}
	if _, err := env.Client.CoreV1().ConfigMaps(a.ns).Create(ctx, oldLock, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Locks of the upstream elector, written under its user agent.
	upstream := upstreamClient(t)
	if _, err := upstream.CoordinationV1().Leases(a.ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "upstream"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: new("upstream-old"), LeaseDurationSeconds: new(int32(1)),
			RenewTime: &metav1.MicroTime{Time: time.Now().Add(-time.Hour)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	upstreamCM := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "upstream-cm", Annotations: map[string]string{election.LeaderAnnotation: record("upstream-old")}}}
	if _, err := upstream.CoreV1().ConfigMaps(a.ns).Create(ctx, upstreamCM, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	leasePod := a.pod("lease-0", "web", map[string]string{webhook.AnnotationElection: "cert-manager-leader"})
	a.pod("cm-0", "web", map[string]string{webhook.AnnotationElection: "ingress-controller-leader", webhook.AnnotationLockType: "configmaps"})
	a.pod("upstream-cm-0", "web", map[string]string{webhook.AnnotationElection: "upstream-cm", webhook.AnnotationLockType: "configmaps"})
	cs := a.elector(leasePod)
	waitAllowed(t, cs, a.ns, "update", "coordination.k8s.io", "leases", "cert-manager-leader")
	waitAllowed(t, cs, a.ns, "update", "", "configmaps", "ingress-controller-leader")
	waitAllowed(t, cs, a.ns, "update", "", "configmaps", "upstream-cm")
	takeConfigMapLock := func(name string) error {
		cm, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cm.Annotations[election.LeaderAnnotation] = record("attacker")
		_, err = cs.CoreV1().ConfigMaps(a.ns).Update(ctx, cm, metav1.UpdateOptions{})
		return err
	}

	t.Run("legitimate: the upstream elector's Lease, taken over by this elector", func(t *testing.T) {
		s := runSidecar(t, a.pod("upstream-0", "web", map[string]string{webhook.AnnotationElection: "upstream", webhook.AnnotationTTL: "4s"}))
		if leader(t, s) != s {
			t.Error("the elector does not lead the upstream elector's election")
		}
	})
	t.Run("legitimate: the upstream elector's ConfigMap lock", func(t *testing.T) {
		allowed(t, "an elector taking the upstream elector's ConfigMap lock", takeConfigMapLock("upstream-cm"))
	})
	t.Run("takes cert-manager's Lease", func(t *testing.T) {
		refused(t, "an elector named after cert-manager's Lease takes it", takeLease(ctx, cs, a.ns, "cert-manager-leader"), byPolicy(policyLock))
	})
	t.Run("takes an older controller's ConfigMap lock", func(t *testing.T) {
		refused(t, "an elector named after another controller's ConfigMap lock takes it", takeConfigMapLock("ingress-controller-leader"), byPolicy(policyLock))
	})
	if h := holder(t, a.ns, "cert-manager-leader"); h != "victim" {
		t.Errorf("Lease cert-manager-leader is held by %q now", h)
	}
	cm, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, "ingress-controller-leader", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Annotations[election.LeaderAnnotation]; got != record("victim") {
		t.Errorf("ConfigMap ingress-controller-leader holds the record %s now", got)
	}
}

// upstreamClient acts as the admin under the user agent of the upstream
// vapor-ware elector (client-go's default for its binary, elector), so
// that what it writes is recorded as written by manager elector.
func upstreamClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.UserAgent = "elector/v0.0.0 (linux/amd64) kubernetes/$Format"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestLockCreatesAreTheElectors: RBAC cannot limit create by name, so the
// create an elector's account holds for its lock objects reaches every
// name of its namespace. A stolen elector token must not use it to make a
// ConfigMap an application reads, with data of its choosing, nor its own
// lock object with data in it; the elector still makes its lock as it
// does. An account that may update every ConfigMap of its namespace (an
// application that shares its service account with an elector) holds
// create from its own Role too, and keeps it.
func TestLockCreatesAreTheElectors(t *testing.T) {
	a := newApp(t)
	a.account("web")
	a.account("operator")
	ctx := ctxFor(t, 2*time.Minute)
	web := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web-lock", webhook.AnnotationLockType: "configmaps"})
	cs := a.elector(web)
	waitAllowed(t, cs, a.ns, "update", "", "configmaps", "web-lock")
	withData := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"admin-users": "attacker"}}
	}

	t.Run("creates a ConfigMap an application reads", func(t *testing.T) {
		_, err := cs.CoreV1().ConfigMaps(a.ns).Create(ctx, withData("feature-flags"), metav1.CreateOptions{})
		refused(t, "an elector's token creates ConfigMap feature-flags", err, byPolicy(policyLockCreate))
	})
	t.Run("creates its own lock with data", func(t *testing.T) {
		_, err := cs.CoreV1().ConfigMaps(a.ns).Create(ctx, withData("web-lock"), metav1.CreateOptions{})
		refused(t, "an elector's token creates its lock with data", err, byPolicy(policyLockCreate))
	})
	t.Run("creates its own lock with a label", func(t *testing.T) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "web-lock", Labels: map[string]string{"grafana_dashboard": "1"}}}
		_, err := cs.CoreV1().ConfigMaps(a.ns).Create(ctx, cm, metav1.CreateOptions{})
		refused(t, "an elector's token creates its lock with a label", err, byPolicy(policyLockCreate))
	})
	t.Run("legitimate: the elector makes its lock", func(t *testing.T) {
		s := runSidecar(t, a.get("web-0"))
		if leader(t, s) != s {
			t.Error("the elector does not lead its election")
		}
	})
	t.Run("legitimate: an application sharing its account with an elector", func(t *testing.T) {
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "operator"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}}},
		}
		if _, err := env.Client.RbacV1().Roles(a.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "operator"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "operator"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "operator", Namespace: a.ns}},
		}
		if _, err := env.Client.RbacV1().RoleBindings(a.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		op := a.elector(a.pod("operator-0", "operator", map[string]string{webhook.AnnotationElection: "operator", webhook.AnnotationLockType: "configmaps"}))
		waitAllowed(t, op, a.ns, "restricted", "elector.vapor.io", "locks", ":create")
		_, err := op.CoreV1().ConfigMaps(a.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "operator-state"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
		allowed(t, "an application that may update every ConfigMap creating one, beside its elector", err)
	})
	if _, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, "feature-flags", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap feature-flags: %v, want NotFound", err)
	}
}
