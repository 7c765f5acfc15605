//lint:file-ignore SA1019 Endpoints are a lock type under attack.

package attack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// byEscalation is RBAC's escalation check: a Role or RoleBinding that
// would grant rights its author does not hold itself.
var byEscalation = refusal{
	name: "RBAC's escalation check",
	match: func(err error) bool {
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "is attempting to grant RBAC permissions not currently held")
	},
}

// TestInjectorTokenIsNoMasterKey: the injector's token is the most
// valuable one the product adds (it runs in every cluster, with rights in
// every namespace). Stolen, it must not rewrite pods, read Secrets, take
// Leases, rewrite the kubernetes Service's Endpoints or any Service's
// EndpointSlices, or hand its rights on to another account; its own work (its leader Lease, its certificate
// Secret, the grants) must still go through.
func TestInjectorTokenIsNoMasterKey(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web"})
	victimLease(t, a.ns, "web")
	victimLease(t, "kube-system", "kube-controller-manager")
	victimConfigMap(t, a.ns, "app-settings", map[string]string{"mode": "safe"})
	kube := systemPod(t, "attack-target-"+a.ns)
	for _, ns := range []string{"kube-system", a.ns} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "attack-target-" + a.ns}, StringData: map[string]string{"key": "secret"}}
		if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The API server keeps the kubernetes Service's Endpoints and
	// EndpointSlice itself.
	eventually(t, 30*time.Second, func() error {
		if _, err := env.Client.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := env.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		return err
	})
	inj := injectorClient(t)
	anyPolicy := byPolicy(policyPrefix)

	t.Run("legitimate", func(t *testing.T) {
		// The running injector renews the same Lease: retry a conflict.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			l, err := env.Client.CoordinationV1().Leases(controlplane.InjectorNamespace).Get(ctx, "k8s-elector-injector", metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = inj.CoordinationV1().Leases(controlplane.InjectorNamespace).Update(ctx, l, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		})
		allowed(t, "the injector renewing its leader Lease (dry run)", err)
		_, err = inj.CoreV1().Secrets(controlplane.InjectorNamespace).Get(ctx, controlplane.InjectorCertSecret, metav1.GetOptions{})
		allowed(t, "the injector reading its certificate Secret", err)
		_, err = inj.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "k8s-elector-injector", metav1.GetOptions{})
		allowed(t, "the injector reading its webhook configuration", err)
	})

	attacks := []struct {
		name string
		do   func() error
		by   []refusal
	}{
		{"changes a kube-system pod's image", func() error {
			return setImage(ctx, inj, "kube-system", kube.Name, "app", "attacker.example/miner:latest")
		}, []refusal{byRBAC("patch", "pods"), anyPolicy}},
		{"labels an app's pod", func() error {
			return mergePatch(ctx, inj, a.ns, "web-0", labels(map[string]any{"app": "other"}))
		}, []refusal{byRBAC("patch", "pods"), anyPolicy}},
		{"creates a pod in kube-system", func() error {
			_, err := inj.CoreV1().Pods("kube-system").Create(ctx, plainPod("miner", "attack-target", nil), metav1.CreateOptions{})
			return err
		}, []refusal{byRBAC("create", "pods")}},
		{"rewrites default/kubernetes Endpoints", func() error {
			ep, err := env.Client.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return err
			}
			ep.Subsets = []corev1.EndpointSubset{{
				Addresses: []corev1.EndpointAddress{{IP: "192.0.2.66"}},
				Ports:     []corev1.EndpointPort{{Name: "https", Port: 443}},
			}}
			_, err = inj.CoreV1().Endpoints("default").Update(ctx, ep, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "endpoints"), anyPolicy}},
		{"routes an app's Service with an EndpointSlice", func() error {
			s := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{
					"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "attacker.example.com",
				}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.66"}}},
			}
			_, err := inj.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, s, metav1.CreateOptions{})
			return err
		}, []refusal{anyPolicy}},
		{"rewrites default/kubernetes EndpointSlice", func() error {
			s, err := env.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.66"}}}
			_, err = inj.DiscoveryV1().EndpointSlices("default").Update(ctx, s, metav1.UpdateOptions{})
			return err
		}, []refusal{anyPolicy}},
		{"reads a kube-system Secret", func() error {
			_, err := inj.CoreV1().Secrets("kube-system").Get(ctx, "attack-target-"+a.ns, metav1.GetOptions{})
			return err
		}, []refusal{byRBAC("get", "secrets")}},
		{"reads an app's Secret", func() error {
			_, err := inj.CoreV1().Secrets(a.ns).Get(ctx, "attack-target-"+a.ns, metav1.GetOptions{})
			return err
		}, []refusal{byRBAC("get", "secrets")}},
		{"lists every Secret", func() error {
			_, err := inj.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
			return err
		}, []refusal{byRBAC("list", "secrets")}},
		{"takes an app's election Lease", func() error { return takeLease(ctx, inj, a.ns, "web") }, []refusal{byRBAC("update", "leases"), anyPolicy}},
		{"takes kube-system's kube-controller-manager Lease", func() error {
			return takeLease(ctx, inj, "kube-system", "kube-controller-manager")
		}, []refusal{byRBAC("update", "leases"), anyPolicy}},
		{"creates a Lease in an app's namespace", func() error {
			_, err := inj.CoordinationV1().Leases(a.ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "squat"}}, metav1.CreateOptions{})
			return err
		}, []refusal{byRBAC("create", "leases"), anyPolicy}},
		{"rewrites an app's ConfigMap", func() error {
			cm, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, "app-settings", metav1.GetOptions{})
			if err != nil {
				return err
			}
			cm.Data["mode"] = "attacker"
			_, err = inj.CoreV1().ConfigMaps(a.ns).Update(ctx, cm, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "configmaps"), anyPolicy}},
		{"creates a ConfigMap in kube-system", func() error {
			_, err := inj.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "squat-" + a.ns}}, metav1.CreateOptions{})
			return err
		}, []refusal{byRBAC("create", "configmaps"), anyPolicy}},
		{"binds itself to cluster-admin", func() error {
			_, err := inj.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate-" + a.ns},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: controlplane.InjectorAccount, Namespace: controlplane.InjectorNamespace}},
			}, metav1.CreateOptions{})
			return err
		}, []refusal{byRBAC("create", "clusterrolebindings")}},
		{"binds itself to cluster-admin in kube-system", func() error {
			_, err := inj.RbacV1().RoleBindings("kube-system").Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "escalate-" + a.ns},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: controlplane.InjectorAccount, Namespace: controlplane.InjectorNamespace}},
			}, metav1.CreateOptions{})
			return err
		}, []refusal{byEscalation, anyPolicy}},
		{"adds a subject to the deployer's RoleBinding", func() error {
			rb, err := env.Client.RbacV1().RoleBindings(a.ns).Get(ctx, "deployer", metav1.GetOptions{})
			if err != nil {
				return err
			}
			rb.Subjects = append(rb.Subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: controlplane.InjectorAccount, Namespace: controlplane.InjectorNamespace})
			_, err = inj.RbacV1().RoleBindings(a.ns).Update(ctx, rb, metav1.UpdateOptions{})
			return err
		}, []refusal{byEscalation, anyPolicy}},
		{"widens its ClusterRole", func() error {
			cr, err := env.Client.RbacV1().ClusterRoles().Get(ctx, "k8s-elector-injector", metav1.GetOptions{})
			if err != nil {
				return err
			}
			cr.Rules = append(cr.Rules, rbacv1.PolicyRule{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}})
			_, err = inj.RbacV1().ClusterRoles().Update(ctx, cr, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "clusterroles")}},
		{"deletes the shipped admission policies", func() error {
			var errs []error
			for name := range shipped("ValidatingAdmissionPolicy") {
				errs = append(errs, inj.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, name, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}))
			}
			if len(errs) == 0 {
				return errors.New("config/default ships no ValidatingAdmissionPolicy")
			}
			return errs[0]
		}, []refusal{byRBAC("delete", "validatingadmissionpolicies")}},
		{"mints a token of a kube-system account", func() error {
			_, err := inj.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "attack-target", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}, []refusal{byRBAC("create", "serviceaccounts/token")}},
		{"turns its webhook on kube-system", func() error {
			whc, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "k8s-elector-injector", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for i := range whc.Webhooks {
				whc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{}
				whc.Webhooks[i].MatchConditions = nil
				whc.Webhooks[i].FailurePolicy = new(admissionregistrationv1.Ignore)
			}
			_, err = inj.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, whc, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, []refusal{anyPolicy}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "the injector's token "+at.name, at.do(), at.by...)
		})
	}
	if got := imageOf(t, "kube-system", kube.Name, "app"); got != "registry.k8s.io/pause:3.10" {
		t.Errorf("the kube-system pod runs %s now", got)
	}
	for ns, name := range map[string]string{a.ns: "web", "kube-system": "kube-controller-manager"} {
		if h := holder(t, ns, name); h != "victim" {
			t.Errorf("Lease %s/%s is held by %q now", ns, name, h)
		}
	}
}

// TestInjectorCannotGrantByProxy: the injector may write Roles and
// RoleBindings (the grants are its job), so a stolen injector token could
// hand rights (locks, pods patch, EndpointSlices) to an account the thief
// holds instead of using them itself:
// the deployer's, or that of an application pod it broke into (here
// "bystander", which runs no elector; or "web", which runs one). Each
// chain must break somewhere, and what it aims at stays as it was.
func TestInjectorCannotGrantByProxy(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 3*time.Minute)
	inj := injectorClient(t)
	a.account("bystander")
	a.account("web")
	a.pod("plain-0", "bystander", nil)
	web := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodLabel: roleKey})
	bystander := a.elector(a.get("plain-0"))
	asWeb := a.elector(web)
	victimLease(t, "kube-system", "kube-scheduler")
	victimLease(t, a.ns, "cert-manager-leader")
	kube := systemPod(t, "attack-target-"+a.ns)
	deployer := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "deployer", Namespace: a.ns}
	managed := map[string]string{"app.kubernetes.io/managed-by": "k8s-elector-injector"}
	// grant writes, as the injector, a Role (when rules are given) and a
	// RoleBinding of the same name, then has the thief's account use it.
	// It goes on for ten seconds, as a thief would: the grant reconciler
	// may delete what it did not make, and RBAC takes a moment to see a
	// new binding. Only the shipped policy and RBAC's escalation check
	// refuse for good; the last error is returned.
	grant := func(ns, name string, rules []rbacv1.PolicyRule, ref rbacv1.RoleRef, subject rbacv1.Subject, use func() error) error {
		t.Cleanup(func() {
			_ = env.Client.RbacV1().RoleBindings(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
			_ = env.Client.RbacV1().Roles(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		steps := []func() error{
			func() error {
				if rules == nil {
					return nil
				}
				_, err := inj.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: managed}, Rules: rules}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("creating Role %s/%s: %w", ns, name, err)
				}
				return nil
			},
			func() error {
				_, err := inj.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: managed}, RoleRef: ref, Subjects: []rbacv1.Subject{subject},
				}, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("creating RoleBinding %s/%s: %w", ns, name, err)
				}
				return nil
			},
			use,
		}
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			for i, step := range steps {
				if err = step(); err != nil {
					// A refusal of the grant itself is final; one of its
					// use may come before RBAC sees the grant.
					if i < len(steps)-1 && (byPolicy(policyPrefix).match(err) || byEscalation.match(err)) {
						return err
					}
					break
				}
			}
			if err == nil {
				return nil
			}
		}
		return err
	}
	// The reconciler deleting a Role mid-chain: the RoleBinding's
	// escalation check then finds no Role to read.
	byCleanup := refusal{
		name: "the grant reconciler deleting what it did not make",
		match: func(err error) bool {
			return apierrors.IsNotFound(err) && strings.Contains(err.Error(), "creating RoleBinding")
		},
	}
	leaseRule := func(names ...string) []rbacv1.PolicyRule {
		r := rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "update", "watch"}, ResourceNames: names}
		return []rbacv1.PolicyRule{r}
	}
	lockMarker := func(names ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"locks"}, ResourceNames: names, Verbs: []string{"restricted"}}
	}
	podLabel := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "k8s-elector-pod-label"}
	role := func(name string) rbacv1.RoleRef {
		return rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	}
	byInjectorPolicy := byPolicy("k8s-elector-injector")

	t.Run("any Role over kube-system's Leases, for the deployer", func(t *testing.T) {
		name := "proxy-leases-" + a.ns
		err := grant("kube-system", name, []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "update"}}},
			role(name), deployer, func() error { return takeLease(ctx, a.deployer, "kube-system", "kube-scheduler") })
		refused(t, "the injector's token hands the deployer kube-system's Leases", err, byInjectorPolicy, byEscalation)
	})

	t.Run("a grant-shaped Role in kube-system, for an account of another namespace", func(t *testing.T) {
		name := "k8s-elector-proxy-" + a.ns
		err := grant("kube-system", name, leaseRule("kube-scheduler"), role(name), deployer,
			func() error { return takeLease(ctx, a.deployer, "kube-system", "kube-scheduler") })
		refused(t, "the injector's token grants the deployer kube-system's kube-scheduler Lease like an election", err, byInjectorPolicy, byCleanup, byRBAC("update", "leases"))
	})

	t.Run("the pod-label ClusterRole in kube-system, for the deployer", func(t *testing.T) {
		err := grant("kube-system", "k8s-elector-deployer:pod-label", nil, podLabel, deployer,
			func() error {
				return setImage(ctx, a.deployer, "kube-system", kube.Name, "app", "attacker.example/miner:latest")
			})
		refused(t, "the injector's token lets the deployer change a kube-system pod's image", err, byInjectorPolicy)
	})

	t.Run("the pod-label ClusterRole, for an account that runs no elector", func(t *testing.T) {
		// Shaped exactly like the reconciler's binding, in the namespace
		// of the account: only the account's lack of an elector differs.
		// The reconciler deletes it, and the thief makes it again: a patch
		// that RBAC authorized while it existed must still be restricted
		// when the policy looks, a moment later (the policy restricts an
		// account that no longer holds the right it was let in by).
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-bystander:pod-label", nil, podLabel, subject,
			func() error { return setImage(ctx, bystander, a.ns, "web-0", "app", "attacker.example/miner:latest") })
		refused(t, "the injector's token lets an application's account change a pod's image", err,
			byInjectorPolicy, byPolicy(policyPodLabel), byRBAC("patch", "pods"))
	})

	t.Run("a grant-shaped Role over another controller's Lease, without the lock marker", func(t *testing.T) {
		// Without the marker, the lock policy would not know the account
		// for an elector's: the injector may not grant a lock by name
		// without it.
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-bystander", leaseRule("cert-manager-leader"), role("k8s-elector-bystander"), subject,
			func() error { return takeLease(ctx, bystander, a.ns, "cert-manager-leader") })
		refused(t, "the injector's token grants an application's account another controller's Lease, unmarked", err, byInjectorPolicy)
	})

	t.Run("a grant-shaped Role over another controller's Lease, for an account that runs no elector", func(t *testing.T) {
		// The escalation check makes the injector hold every lock right it
		// grants, so this Role is exactly one the reconciler could write:
		// the thief's account holds update on the Lease by name until the
		// reconciler deletes it. The Lease is no elector's, so an elector's
		// rights do not reach it; and once the grant is gone, an update
		// RBAC let through a moment before is restricted all the same.
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		rules := append(leaseRule("cert-manager-leader"), lockMarker("cert-manager-leader"))
		err := grant(a.ns, "k8s-elector-bystander", rules, role("k8s-elector-bystander"), subject,
			func() error { return takeLease(ctx, bystander, a.ns, "cert-manager-leader") })
		refused(t, "the injector's token lets an application's account take another controller's Lease", err,
			byPolicy(policyLock), byCleanup, byRBAC("update", "leases"))
	})

	createConfigMap := func() error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "feature-flags"}, Data: map[string]string{"admin-users": "attacker"}}
		_, err := bystander.CoreV1().ConfigMaps(a.ns).Create(ctx, cm, metav1.CreateOptions{})
		return err
	}
	createRule := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}

	t.Run("a grant-shaped Role with create, without the create marker", func(t *testing.T) {
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-bystander", []rbacv1.PolicyRule{createRule}, role("k8s-elector-bystander"), subject, createConfigMap)
		refused(t, "the injector's token grants an application's account create on ConfigMaps, unmarked", err, byInjectorPolicy)
	})

	t.Run("a grant-shaped Role with create, for an account that runs no elector", func(t *testing.T) {
		// RBAC cannot limit create by name; the marker the injector must
		// add limits it to the account's lock objects, of which this
		// account has none.
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-bystander", []rbacv1.PolicyRule{createRule, lockMarker(":create")}, role("k8s-elector-bystander"), subject, createConfigMap)
		refused(t, "the injector's token lets an application's account create a ConfigMap with data", err,
			byPolicy(policyLockCreate), byCleanup, byRBAC("create", "configmaps"))
	})

	routeSlice := func() error {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-leader", Labels: map[string]string{
				"kubernetes.io/service-name": "web-leader", "endpointslice.kubernetes.io/managed-by": "elector.vapor.io",
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{"192.0.2.66"},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: a.ns, Name: "plain-0"},
			}},
		}
		_, err := bystander.DiscoveryV1().EndpointSlices(a.ns).Create(ctx, s, metav1.CreateOptions{})
		return err
	}
	sliceRules := []rbacv1.PolicyRule{
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, ResourceNames: []string{"web-leader"}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"create"}},
	}

	t.Run("a grant-shaped Role with EndpointSlices, without the leaderservices marker", func(t *testing.T) {
		// Without the marker, the account's slice writes would never reach
		// the injector's webhook.
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-bystander", sliceRules, role("k8s-elector-bystander"), subject, routeSlice)
		byMarkerRule := refusal{name: byInjectorPolicy.name + ", for the leaderservices marker", match: func(err error) bool {
			return byInjectorPolicy.match(err) && strings.Contains(err.Error(), "restricted on elector.vapor.io/leaderservices")
		}}
		refused(t, "the injector's token grants an application's account EndpointSlices, unmarked", err, byMarkerRule)
	})

	t.Run("a grant-shaped Role with EndpointSlices, for an account that runs no elector", func(t *testing.T) {
		// Shaped exactly like a -leader-service grant: the webhook finds no
		// elector with -leader-service in the pod the token is bound to.
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "bystander", Namespace: a.ns}
		rules := append(slices.Clone(sliceRules), rbacv1.PolicyRule{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"leaderservices"}, Verbs: []string{"restricted"}})
		err := grant(a.ns, "k8s-elector-bystander", rules, role("k8s-elector-bystander"), subject, routeSlice)
		refused(t, "the injector's token lets an application's account route a Service", err,
			bySliceWebhook("pod plain-0 has no elector container"), byCleanup, byRBAC("create", "endpointslices"))
	})

	t.Run("the unrestricting marker, for an elector account that labels its pod", func(t *testing.T) {
		// The pod-label policy spares accounts that hold update on the
		// podlabels name "-", as wildcard rules (cluster-admin) do.
		waitAllowed(t, asWeb, a.ns, "patch", "", "pods", "web-0")
		subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "web", Namespace: a.ns}
		err := grant(a.ns, "k8s-elector-web-canary", []rbacv1.PolicyRule{{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"podlabels"}, ResourceNames: []string{"-"}, Verbs: []string{"update"}}},
			role("k8s-elector-web-canary"), subject,
			func() error { return setImage(ctx, asWeb, a.ns, "plain-0", "app", "attacker.example/miner:latest") })
		refused(t, "the injector's token unrestricts an elector account, which then changes a pod's image", err,
			byInjectorPolicy, byCleanup, byPolicy(policyPodLabel))
	})

	if h := holder(t, "kube-system", "kube-scheduler"); h != "victim" {
		t.Errorf("kube-system's kube-scheduler Lease is held by %q now", h)
	}
	if h := holder(t, a.ns, "cert-manager-leader"); h != "victim" {
		t.Errorf("Lease cert-manager-leader is held by %q now", h)
	}
	if got := imageOf(t, "kube-system", kube.Name, "app"); got != "registry.k8s.io/pause:3.10" {
		t.Errorf("the kube-system pod runs %s now", got)
	}
	if _, err := env.Client.CoreV1().ConfigMaps(a.ns).Get(ctx, "feature-flags", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap feature-flags: %v, want NotFound", err)
	}
	if _, err := env.Client.DiscoveryV1().EndpointSlices(a.ns).Get(ctx, "web-leader", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("EndpointSlice web-leader: %v, want NotFound", err)
	}
	for _, p := range []string{"web-0", "plain-0"} {
		if got := imageOf(t, a.ns, p, "app"); got != "registry.k8s.io/pause:3.10" {
			t.Errorf("pod %s runs %s now", p, got)
		}
	}
}
