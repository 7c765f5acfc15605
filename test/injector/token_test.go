package injector

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
)

// Every right the injector's token holds, as "verb group/resource[/name]",
// and why. Anything else it gains fails TestInjectorTokenRights.
var (
	// Everywhere.
	injectorRights = []string{
		// Any authenticated user's (system:basic-user).
		"create authentication.k8s.io/selfsubjectreviews",
		"create authorization.k8s.io/selfsubjectaccessreviews",
		"create authorization.k8s.io/selfsubjectrulesreviews",
		// Any service account's (system:kube-apiserver's ClusterTrustBundle
		// readers), in the control plane of the tests.
		"get certificates.k8s.io/clustertrustbundles", "list certificates.k8s.io/clustertrustbundles", "watch certificates.k8s.io/clustertrustbundles",
		// Its cache of injected pods.
		"get /pods", "list /pods", "watch /pods",
		// The Roles and RoleBindings it keeps.
		"get rbac.authorization.k8s.io/roles", "list rbac.authorization.k8s.io/roles", "watch rbac.authorization.k8s.io/roles",
		"create rbac.authorization.k8s.io/roles", "update rbac.authorization.k8s.io/roles", "delete rbac.authorization.k8s.io/roles",
		"get rbac.authorization.k8s.io/rolebindings", "list rbac.authorization.k8s.io/rolebindings", "watch rbac.authorization.k8s.io/rolebindings",
		"create rbac.authorization.k8s.io/rolebindings", "update rbac.authorization.k8s.io/rolebindings", "delete rbac.authorization.k8s.io/rolebindings",
		"bind rbac.authorization.k8s.io/clusterroles/k8s-elector-pod-label",
		// Held to grant them (the escalation check); writes refused by the
		// policy k8s-elector-injector.
		"get coordination.k8s.io/leases", "create coordination.k8s.io/leases", "update coordination.k8s.io/leases", "watch coordination.k8s.io/leases",
		"get /configmaps", "create /configmaps", "update /configmaps", "watch /configmaps",
		"get discovery.k8s.io/endpointslices", "create discovery.k8s.io/endpointslices", "update discovery.k8s.io/endpointslices",
		// Granted to electors with -leader-service, and read by the
		// EndpointSlice webhook.
		"get /services",
		// Events, its own and granted.
		"create /events", "patch /events", "create events.k8s.io/events", "patch events.k8s.io/events",
		// Markers, granted.
		"update elector.vapor.io/podlabels", "update elector.vapor.io/elections", "restricted elector.vapor.io/locks",
		"restricted elector.vapor.io/leaderservices",
		// Its webhook configurations' caBundles.
		"list admissionregistration.k8s.io/mutatingwebhookconfigurations", "watch admissionregistration.k8s.io/mutatingwebhookconfigurations",
		"get admissionregistration.k8s.io/mutatingwebhookconfigurations/k8s-elector-injector",
		"update admissionregistration.k8s.io/mutatingwebhookconfigurations/k8s-elector-injector",
		"list admissionregistration.k8s.io/validatingwebhookconfigurations", "watch admissionregistration.k8s.io/validatingwebhookconfigurations",
		"get admissionregistration.k8s.io/validatingwebhookconfigurations/k8s-elector-injector",
		"update admissionregistration.k8s.io/validatingwebhookconfigurations/k8s-elector-injector",
	}
	// In its own namespace, besides.
	injectorNamespaceRights = []string{
		// Its certificate Secret (-cert-management=self).
		"list /secrets", "watch /secrets", "create /secrets",
		"get /secrets/k8s-elector-injector-cert", "update /secrets/k8s-elector-injector-cert",
		// Its leader-election Lease.
		"get coordination.k8s.io/leases/k8s-elector-injector", "update coordination.k8s.io/leases/k8s-elector-injector",
	}
)

// TestInjectorTokenRights checks the injector's token, from a TokenRequest
// for its service account with config/rbac applied, against the allowlist
// above, with SelfSubjectRulesReview, in a namespace with electors and in
// its own.
func TestInjectorTokenRights(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, 30*time.Second)
	token, err := controlplane.Token(ctx, env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	injector := clientFor(t, token)
	for _, tt := range []struct {
		ns   string
		want []string
	}{
		{ns, injectorRights},
		{systemNamespace, slices.Concat(injectorRights, injectorNamespaceRights)},
	} {
		review, err := injector.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{
			Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: tt.ns},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Incomplete {
			t.Errorf("the rules review of %s is incomplete: %s", tt.ns, review.Status.EvaluationError)
		}
		got := flatten(review.Status.ResourceRules)
		want := slices.Clone(tt.want)
		slices.Sort(want)
		if diff := cmp.Diff(slices.Compact(want), got); diff != "" {
			t.Errorf("the injector's rights in %s (-allowlist +token):\n%s", tt.ns, diff)
		}
	}
}

// flatten lists every verb group/resource[/name] a set of rules allows,
// sorted, without duplicates.
func flatten(rules []authorizationv1.ResourceRule) []string {
	var out []string
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, v := range r.Verbs {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, n := range names {
						s := v + " " + g + "/" + res
						if n != "" {
							s += "/" + n
						}
						out = append(out, s)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestInjectorTokenCannotUseWhatItGrants: the policy k8s-elector-injector
// refuses the injector's token every lock, EndpointSlice or pod write but
// its own leader-election Lease, and RBAC writes not shaped like the
// reconciler's.
// Dry runs are admitted like real requests and leave nothing behind.
func TestInjectorTokenCannotUseWhatItGrants(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	token, err := controlplane.Token(ctx, env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	injector := clientFor(t, token)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	labeller := grants.Accounts(map[string][]grants.Elector{"app": {
		{Election: "x", LockType: election.LockLeases, PodLabel: "example.com/role"},
		{Election: "y", LockType: election.LockConfigMaps},
	}})[0]
	router := grants.Accounts(map[string][]grants.Elector{"app": {{Election: "x", LockType: election.LockLeases, LeaderService: "x-leader"}}})[0]
	// routerRole is the reconciler's Role for router, with edit applied.
	routerRole := func(name string, edit func(*rbacv1.Role)) *rbacv1.Role {
		role := grants.DesiredRole(ns, router)
		role.Name = name
		edit(role)
		return role
	}
	isMarker := func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, grants.MarkerLeaderServices) }
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "x-leader", Labels: map[string]string{election.LabelServiceName: "x-leader", election.LabelManagedBy: election.ManagedByElector}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.66"}}},
	}
	if _, err := env.Client.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lease, err := injector.CoordinationV1().Leases(ns).Get(ctx, "theirs", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the injector cannot read a Lease, which RBAC allows it: %v", err)
	}

	denied := []struct {
		name string
		do   func(kubernetes.Interface) error
	}{
		{"update another's Lease", func(c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"create a Lease", func(c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "mine"}}, dry)
			return err
		}},
		{"create a Lease in its namespace with another name", func(c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(systemNamespace).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, dry)
			return err
		}},
		{"create a ConfigMap", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, dry)
			return err
		}},
		{"a Role that grants every Lease", func(c kubernetes.Interface) error {
			role := managedRole("k8s-elector-evil", rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "update", "watch"}})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role with the marker that lifts the pod-label policy", func(c kubernetes.Interface) error {
			role := managedRole("k8s-elector-canary", rbacv1.PolicyRule{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"podlabels"}, ResourceNames: []string{"-"}, Verbs: []string{"update"}})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role with markers for every name", func(c kubernetes.Interface) error {
			role := managedRole("k8s-elector-every", rbacv1.PolicyRule{APIGroups: []string{"elector.vapor.io"}, Resources: []string{"podlabels"}, Verbs: []string{"update"}})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"create an EndpointSlice", func(c kubernetes.Interface) error {
			_, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, dry)
			return err
		}},
		{"a Role that grants EndpointSlices without the leaderservices marker", func(c kubernetes.Interface) error {
			role := routerRole("k8s-elector-unmarked", func(r *rbacv1.Role) { r.Rules = slices.DeleteFunc(r.Rules, isMarker) })
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role whose leaderservices marker names a Service", func(c kubernetes.Interface) error {
			role := routerRole("k8s-elector-named-marker", func(r *rbacv1.Role) {
				r.Rules[slices.IndexFunc(r.Rules, isMarker)].ResourceNames = []string{"x-leader"}
			})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role that grants update on every EndpointSlice", func(c kubernetes.Interface) error {
			role := routerRole("k8s-elector-every-slice", func(r *rbacv1.Role) {
				r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "update"}})
			})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role that grants every Service", func(c kubernetes.Interface) error {
			role := routerRole("k8s-elector-every-service", func(r *rbacv1.Role) {
				r.Rules = append(r.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get"}})
			})
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		{"a Role without the managed-by label", func(c kubernetes.Interface) error {
			role := grants.DesiredRole(ns, grants.Accounts(map[string][]grants.Elector{"app": {{Election: "x", LockType: election.LockLeases}}})[0])
			delete(role.Labels, grants.LabelManagedBy)
			_, err := c.RbacV1().Roles(ns).Create(ctx, role, dry)
			return err
		}},
		// RoleBindings to the pod-label ClusterRole, which the injector may
		// bind (a Role of its own would have to exist for RBAC to check it).
		{"a RoleBinding under another name than the reconciler's", func(c kubernetes.Interface) error {
			b := grants.DesiredPodLabelBinding(ns, labeller)
			b.Name = grants.RoleName("app")
			_, err := c.RbacV1().RoleBindings(ns).Create(ctx, b, dry)
			return err
		}},
		{"a RoleBinding for another namespace's account", func(c kubernetes.Interface) error {
			b := grants.DesiredPodLabelBinding(ns, labeller)
			b.Subjects[0].Namespace = "kube-system"
			_, err := c.RbacV1().RoleBindings(ns).Create(ctx, b, dry)
			return err
		}},
	}
	for _, tt := range denied {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do(injector)
			refused := apierrors.IsForbidden(err) || apierrors.IsInvalid(err)
			if !strings.Contains(fmt.Sprint(err), "k8s-elector-injector") || !refused {
				t.Errorf("err = %v, want the policy k8s-elector-injector to deny it", err)
			}
			// The same request by a cluster admin passes: the policy, not
			// a malformed request, refused it.
			if err := tt.do(env.Client); err != nil {
				t.Errorf("as a cluster admin: %v", err)
			}
		})
	}

	if _, err := injector.CoreV1().Pods(ns).Patch(ctx, "any", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the injector patching a pod: err = %v, want Forbidden", err)
	}

	allowed := []struct {
		name string
		do   func() error
	}{
		{"its own leader-election Lease", func() error {
			// Made already if an injector of another test led.
			leases := injector.CoordinationV1().Leases(systemNamespace)
			_, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "k8s-elector-injector"}}, dry)
			if !apierrors.IsAlreadyExists(err) {
				return err
			}
			own, err := leases.Get(ctx, "k8s-elector-injector", metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = leases.Update(ctx, own, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"an account's Role and pod-label RoleBinding, as the reconciler makes them", func() error {
			if _, err := injector.RbacV1().Roles(ns).Create(ctx, grants.DesiredRole(ns, labeller), dry); err != nil {
				return err
			}
			_, err := injector.RbacV1().RoleBindings(ns).Create(ctx, grants.DesiredPodLabelBinding(ns, labeller), dry)
			return err
		}},
		{"the Role of an account with -leader-service, as the reconciler makes it", func() error {
			_, err := injector.RbacV1().Roles(ns).Create(ctx, grants.DesiredRole(ns, router), dry)
			return err
		}},
	}
	for _, tt := range allowed {
		if err := tt.do(); err != nil {
			t.Errorf("%s: %v, want it allowed", tt.name, err)
		}
	}
}

func managedRole(name string, rules ...rbacv1.PolicyRule) *rbacv1.Role {
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{grants.LabelManagedBy: grants.ManagedBy}},
		Rules:      rules,
	}
}
