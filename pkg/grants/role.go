// Package grants gives the service account of each injected pod the rights
// its elector needs, and no more: a Role and RoleBinding per service
// account, naming the account's own lock objects, computed from what the
// pods' elector containers run. It also trims the injector's pod cache
// (CacheByObject) and counts from it the pods an older injector injected
// (OutdatedPods).
package grants

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// LabelManagedBy marks the Roles and RoleBindings the reconciler made, with
// value ManagedBy. It is the reconciler's only proof of ownership: it never
// updates or deletes an object without it.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "k8s-elector-injector"
)

// LegacyName names the one Role and RoleBinding per namespace that the
// first release kept for every injected service account at once. The
// reconciler deletes them when they carry LabelManagedBy.
const LegacyName = "k8s-elector"

// PodLabelClusterRole is the shipped ClusterRole (config/rbac) with pods
// get and patch, and the MarkerRestrictedVerb marker, bound to the service
// accounts of electors that label or annotate their pod (-pod-label or
// -pod-deletion-cost). The injector holds "bind" on it rather than pods
// patch itself; the ValidatingAdmissionPolicy k8s-elector-pod-label narrows
// what its holders may patch to the labels and elections of their markers,
// and the pod's own deletion cost.
const PodLabelClusterRole = "k8s-elector-pod-label"

// Marker rights. RBAC never checks them for a real request: no API serves
// the group MarkerGroup. A per-account Role carries them so that the
// ValidatingAdmissionPolicy k8s-elector-pod-label can ask the authorizer
// what an account labels (config/policy/pod_label.yaml).
const (
	MarkerGroup = "elector.vapor.io"
	// MarkerPodLabels, with MarkerVerb and a label key as resource name:
	// the account may set that key on pods of its elections.
	MarkerPodLabels = "podlabels"
	// MarkerElections, with MarkerVerb and an election as resource name:
	// the account's electors run that election with -pod-label or
	// -pod-deletion-cost.
	MarkerElections = "elections"
	// MarkerLocks, verb MarkerRestrictedVerb, names the lock objects of an
	// account's electors: the policy k8s-elector-lock then lets it change
	// only the election record on them, so that an election named like an
	// existing ConfigMap (kube-root-ca.crt, an app's settings) cannot be
	// used to rewrite its data.
	MarkerLocks = "locks"
	MarkerVerb  = "update"
	// MarkerCreates, a name no object can have, with MarkerRestrictedVerb
	// on MarkerLocks: the account may create lock objects only under the
	// names it holds MarkerLocks for, and only as an elector makes them
	// (no data, no labels). RBAC cannot limit create by name; the
	// ValidatingAdmissionPolicy k8s-elector-lock-create can, and asks the
	// authorizer for this marker. A name rather than a verb of its own, so
	// that the injector, which must hold what it grants, needs no right
	// beyond the markers it already holds.
	MarkerCreates = ":create"
	// MarkerRestrictedVerb on MarkerPodLabels, with no resource name: the
	// account's pod updates are limited to labelling. It is not in the
	// account's Role but in PodLabelClusterRole, beside pods patch, so that
	// whoever is bound to pods patch that way is restricted, at once and
	// always. A wildcard rule (as in cluster-admin) holds it too; the
	// policy tells the two apart by MarkerCanary, a name never granted.
	MarkerRestrictedVerb = "restricted"
	MarkerCanary         = "-"
	// MarkerLeaderServices, verb MarkerRestrictedVerb, with no resource
	// name: the account keeps a leader Service's endpoints
	// (-leader-service), and every EndpointSlice it creates or updates is
	// sent to the injector's validating webhook, which lets through only
	// its Service's slice listing its own pod (see
	// webhook.ReviewEndpointSlice). RBAC cannot say which address a slice
	// may list, nor limit create by name. No resource name, so that the
	// webhook's match condition, which asks without one, finds it. A
	// wildcard holder holds it too, and is told apart by holding update
	// on the name MarkerCanary, which nothing grants.
	MarkerLeaderServices = "leaderservices"
)

// maxNameLen keeps names readable and within what every tool accepts; the
// RBAC API itself allows longer.
const maxNameLen = 63

// RoleName names the Role and the RoleBinding of the service account sa:
// k8s-elector-<sa>, shortened with a hash of sa when too long.
func RoleName(sa string) string {
	const prefix = "k8s-elector-"
	name := prefix + sa
	if len(name) <= maxNameLen {
		return name
	}
	sum := sha256.Sum256([]byte(sa))
	h := hex.EncodeToString(sum[:])[:10]
	return name[:maxNameLen-len(h)-1] + "-" + h
}

// podLabelBindingName names the RoleBinding of sa to PodLabelClusterRole.
// A service account name cannot hold a colon, so it never equals another
// account's RoleName.
func podLabelBindingName(sa string) string {
	return RoleName(sa) + ":pod-label"
}

// Account is what the electors of one service account run, gathered from
// its pods.
type Account struct {
	Name string
	// Elections by lock type.
	Elections map[election.LockType][]string
	// PodLabels are the -pod-label keys, and PodLabelElections the
	// elections run with one or with -pod-deletion-cost: the elections
	// whose pods the account writes to.
	PodLabels         []string
	PodLabelElections []string
	// LeaderServices are the -leader-service Services, whose
	// EndpointSlices of the same names the account keeps.
	LeaderServices []string
}

// Accounts groups electors by service account ("default" when unset),
// each list sorted and without duplicates, so that unchanged pods give
// unchanged objects.
func Accounts(electors map[string][]Elector) []Account {
	var out []Account
	for _, sa := range slices.Sorted(maps.Keys(electors)) {
		a := Account{Name: sa, Elections: map[election.LockType][]string{}}
		for _, e := range electors[sa] {
			a.Elections[e.LockType] = append(a.Elections[e.LockType], e.Election)
			if e.PodLabel != "" {
				a.PodLabels = append(a.PodLabels, e.PodLabel)
			}
			if e.PodLabel != "" || e.PodDeletionCost {
				a.PodLabelElections = append(a.PodLabelElections, e.Election)
			}
			if e.LeaderService != "" {
				a.LeaderServices = append(a.LeaderServices, e.LeaderService)
			}
		}
		for t := range a.Elections {
			a.Elections[t] = sortedSet(a.Elections[t])
		}
		a.PodLabels, a.PodLabelElections = sortedSet(a.PodLabels), sortedSet(a.PodLabelElections)
		a.LeaderServices = sortedSet(a.LeaderServices)
		out = append(out, a)
	}
	return out
}

func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// lockResource is the API group and resource of a lock type.
func lockResource(t election.LockType) (group, resource string) {
	if t == election.LockLeases {
		return "coordination.k8s.io", string(t)
	}
	return "", string(t)
}

// DesiredRole is the Role of one account in ns:
//   - get, update and watch on exactly its lock objects, by name. The
//     elector reads, renews and watches its one object; no list, no delete.
//   - create on each lock resource it uses: RBAC cannot limit create by
//     name (the name is not known to the authorizer until the object is
//     decoded), and the first elector must make its object.
//   - the markers of the lock policies (see MarkerLocks): its lock objects
//     by name, which it may update only as an elector does, and create,
//     which limits what it makes to those names and to an elector's lock.
//   - events create, for its leadership Events.
//   - with -pod-label, the named markers (see MarkerGroup) of the label
//     keys; with it or -pod-deletion-cost, those of the elections.
//   - with -leader-service: get on its Services by name, which the elector
//     reads for their ports and uid; get and update on the EndpointSlices
//     of the same names; create on EndpointSlices, which RBAC cannot limit
//     by name; and the marker MarkerLeaderServices, under which the
//     injector's webhook checks each of those writes (the right to write an
//     EndpointSlice is the right to send a Service's traffic anywhere).
func DesiredRole(ns string, a Account) *rbacv1.Role {
	var rules []rbacv1.PolicyRule
	var locks []string
	for _, t := range election.LockTypes {
		names := a.Elections[t]
		if len(names) == 0 {
			continue
		}
		group, resource := lockResource(t)
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, ResourceNames: names, Verbs: []string{"get", "update", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{resource}, Verbs: []string{"create"}},
		)
		locks = append(locks, names...)
	}
	if len(locks) > 0 {
		rules = append(rules,
			rbacv1.PolicyRule{
				APIGroups: []string{MarkerGroup}, Resources: []string{MarkerLocks},
				ResourceNames: sortedSet(locks), Verbs: []string{MarkerRestrictedVerb},
			},
			rbacv1.PolicyRule{
				APIGroups: []string{MarkerGroup}, Resources: []string{MarkerLocks},
				ResourceNames: []string{MarkerCreates}, Verbs: []string{MarkerRestrictedVerb},
			},
		)
	}
	rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}})
	if len(a.PodLabels) > 0 {
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{MarkerGroup}, Resources: []string{MarkerPodLabels},
			ResourceNames: a.PodLabels, Verbs: []string{MarkerVerb},
		})
	}
	if len(a.PodLabelElections) > 0 {
		rules = append(rules, rbacv1.PolicyRule{
			APIGroups: []string{MarkerGroup}, Resources: []string{MarkerElections},
			ResourceNames: a.PodLabelElections, Verbs: []string{MarkerVerb},
		})
	}
	if len(a.LeaderServices) > 0 {
		rules = append(rules,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: a.LeaderServices, Verbs: []string{"get"}},
			rbacv1.PolicyRule{
				APIGroups: []string{discoveryv1.GroupName}, Resources: []string{"endpointslices"},
				ResourceNames: a.LeaderServices, Verbs: []string{"get", "update"},
			},
			rbacv1.PolicyRule{APIGroups: []string{discoveryv1.GroupName}, Resources: []string{"endpointslices"}, Verbs: []string{"create"}},
			rbacv1.PolicyRule{APIGroups: []string{MarkerGroup}, Resources: []string{MarkerLeaderServices}, Verbs: []string{MarkerRestrictedVerb}},
		)
	}
	return &rbacv1.Role{ObjectMeta: managedMeta(ns, RoleName(a.Name)), Rules: rules}
}

// DesiredRoleBinding binds the account's Role to it.
func DesiredRoleBinding(ns string, a Account) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: managedMeta(ns, RoleName(a.Name)),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RoleName(a.Name)},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: a.Name, Namespace: ns}},
	}
}

// DesiredPodLabelBinding binds PodLabelClusterRole to an account whose
// electors label or annotate their pod, or is nil for one whose electors
// do not.
func DesiredPodLabelBinding(ns string, a Account) *rbacv1.RoleBinding {
	if len(a.PodLabelElections) == 0 {
		return nil
	}
	return &rbacv1.RoleBinding{
		ObjectMeta: managedMeta(ns, podLabelBindingName(a.Name)),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: PodLabelClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: a.Name, Namespace: ns}},
	}
}

func managedMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: ns,
		Labels: map[string]string{
			LabelManagedBy:           ManagedBy,
			"app.kubernetes.io/name": "k8s-elector",
		},
	}
}
