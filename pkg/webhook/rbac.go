package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// RBACName names the Role and the RoleBinding the reconciler keeps in each
// namespace with injected pods: the name of the standalone Role in
// config/elector, so that a namespace set up by hand is recognised, and left
// alone, rather than given a second copy.
const RBACName = "k8s-elector"

// LabelManagedBy marks the Roles and RoleBindings the reconciler made, with
// value ManagedBy. It is the reconciler's only proof of ownership: it never
// updates or deletes an object without it.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "k8s-elector-injector"
)

// ReasonNotManaged is the reason of the Event posted on a Role or RoleBinding
// named RBACName that the reconciler did not make and so does not touch.
const ReasonNotManaged = "NotManagedByInjector"

// RBACCacheByObject restricts the manager's cache to what the reconciler
// reads: injected pods only, and only its own Roles and RoleBindings, so the
// cache stays small in a cluster with many pods. Pass it as
// cache.Options.ByObject.
func RBACCacheByObject() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&corev1.Pod{}:         {Label: labels.SelectorFromSet(labels.Set{LabelInjected: "true"}), Transform: trimPod},
		&rbacv1.Role{}:        {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
		&rbacv1.RoleBinding{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
	}
}

// trimPod keeps of a cached pod only what the reconciler reads (its
// service account, its elector annotations, whether it has ended) and the
// identity the cache needs: a pod's spec and status are most of its size,
// and a large cluster has many injected pods.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	annotations := map[string]string{}
	for k, v := range pod.Annotations {
		if strings.HasPrefix(k, AnnotationPrefix) {
			annotations[k] = v
		}
	}
	return &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			DeletionTimestamp: pod.DeletionTimestamp,
			Labels:            pod.Labels,
			Annotations:       annotations,
		},
		Spec:   corev1.PodSpec{ServiceAccountName: pod.Spec.ServiceAccountName},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}, nil
}

// RBACReconciler gives the service accounts of injected pods the rights
// their electors need, in a Role and RoleBinding per namespace. The admission
// webhook cannot do it, having no side effects (a dry-run pod create must
// not create RBAC), so this runs beside it. Requests are namespaces.
type RBACReconciler struct {
	// Client reads from a cache set up with RBACCacheByObject.
	Client client.Client
	// APIReader reads what the cache does not hold: a Role or RoleBinding
	// named RBACName that someone else made.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// DefaultLockType is the injector's -lock-type, used for pods without
	// the lock-type annotation; empty means the elector's default, leases.
	DefaultLockType election.LockType
}

// SetupWithManager registers the reconciler. It must run as the only
// writer, so the manager should use leader election.
func (r *RBACReconciler) SetupWithManager(mgr ctrl.Manager) error {
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("elector-rbac").
		Watches(&corev1.Pod{}, byNamespace).
		// Its own objects too, so that one edited or deleted by hand is put back.
		Watches(&rbacv1.Role{}, byNamespace).
		Watches(&rbacv1.RoleBinding{}, byNamespace).
		Complete(r)
}

// Reconcile brings the Role and RoleBinding of one namespace in line with
// its injected pods.
func (r *RBACReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Name
	log := logf.FromContext(ctx).WithValues("namespace", ns)

	// 1. The injected pods that still run an elector.
	var pods corev1.PodList
	// The pods are only read: no need to copy each from the cache.
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{LabelInjected: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing injected pods in %s: %w", ns, err)
	}
	live := slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})

	// 2. None left: remove what the reconciler made, and only that.
	if len(live) == 0 {
		return ctrl.Result{}, r.deleteOwn(ctx, ns)
	}

	// 3. Make or update the Role, then bind it; a Role that is not ours is
	// never bound, since its rights are unknown.
	role := DesiredRole(ns, live, r.DefaultLockType)
	ours, err := r.ensure(ctx, role, &rbacv1.Role{}, func(have client.Object) bool {
		return equality.Semantic.DeepEqual(have.(*rbacv1.Role).Rules, role.Rules)
	}, func(have client.Object) { have.(*rbacv1.Role).Rules = role.Rules })
	if !ours || err != nil {
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			err = nil
		}
		return ctrl.Result{}, err
	}
	binding := DesiredRoleBinding(ns, live)
	_, err = r.ensure(ctx, binding, &rbacv1.RoleBinding{}, func(have client.Object) bool {
		b := have.(*rbacv1.RoleBinding)
		return b.RoleRef == binding.RoleRef && equality.Semantic.DeepEqual(b.Subjects, binding.Subjects)
	}, func(have client.Object) {
		// The roleRef cannot change; a binding with another one is ours
		// (labelled) and so is replaced by deleting it first.
		have.(*rbacv1.RoleBinding).Subjects = binding.Subjects
	})
	if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		// Its pods are going too; retrying would only fill the log.
		log.V(1).Info("Namespace is being deleted; not making elector RBAC")
		return ctrl.Result{}, nil
	}
	if err == nil {
		log.V(1).Info("Elector RBAC in place", "pods", len(live), "subjects", len(binding.Subjects))
	}
	return ctrl.Result{}, err
}

// ensure creates want, or updates the existing object of its name when it is
// ours and differs (same reports whether it does not; apply copies want
// into it). It reports whether the object is ours: one without the managed-by
// label is reported in an Event and left as it is.
func (r *RBACReconciler) ensure(ctx context.Context, want, have client.Object, same func(client.Object) bool, apply func(client.Object)) (bool, error) {
	kind := fmt.Sprintf("%T", want)
	key := client.ObjectKeyFromObject(want)
	err := r.Client.Get(ctx, key, have)
	if apierrors.IsNotFound(err) {
		// The cache holds only labelled objects: not found there may still
		// be someone else's, which Create then reports as AlreadyExists.
		err = r.Client.Create(ctx, want)
		if apierrors.IsAlreadyExists(err) {
			if err := r.APIReader.Get(ctx, key, have); err != nil {
				return false, fmt.Errorf("reading %s %s: %w", kind, key, err)
			}
			if !isOurs(have) {
				r.reportNotManaged(ctx, have)
				return false, nil
			}
			// Ours, but not yet in the cache: the next event will bring it.
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("creating %s %s: %w", kind, key, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s %s: %w", kind, key, err)
	}
	if !isOurs(have) {
		r.reportNotManaged(ctx, have)
		return false, nil
	}
	if rb, ok := have.(*rbacv1.RoleBinding); ok && rb.RoleRef != want.(*rbacv1.RoleBinding).RoleRef {
		if err := r.Client.Delete(ctx, have, client.Preconditions{UID: &rb.UID}); err != nil && !apierrors.IsNotFound(err) {
			return true, fmt.Errorf("deleting %s %s to change its roleRef: %w", kind, key, err)
		}
		return true, r.Client.Create(ctx, want)
	}
	if same(have) {
		return true, nil
	}
	apply(have)
	if err := r.Client.Update(ctx, have); err != nil {
		return true, fmt.Errorf("updating %s %s: %w", kind, key, err)
	}
	return true, nil
}

// deleteOwn deletes the reconciler's Role and RoleBinding in ns, if any.
// The UID precondition keeps it from deleting an object someone recreated
// under the same name since the cache saw it.
func (r *RBACReconciler) deleteOwn(ctx context.Context, ns string) error {
	for _, obj := range []client.Object{&rbacv1.RoleBinding{}, &rbacv1.Role{}} {
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: RBACName}, obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %T %s/%s: %w", obj, ns, RBACName, err)
		}
		if !isOurs(obj) {
			continue
		}
		uid := obj.GetUID()
		if err := r.Client.Delete(ctx, obj, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %T %s/%s: %w", obj, ns, RBACName, err)
		}
	}
	return nil
}

func (r *RBACReconciler) reportNotManaged(ctx context.Context, obj client.Object) {
	msg := fmt.Sprintf("left as it is: it has no label %s=%s, so the elector injector did not make it; "+
		"make sure it grants the electors of the injected pods what they need, or delete it to let the injector manage it", LabelManagedBy, ManagedBy)
	logf.FromContext(ctx).Info("Not managing an existing object", "kind", fmt.Sprintf("%T", obj), "name", obj.GetName(), "namespace", obj.GetNamespace())
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonNotManaged, "Reconcile", "%s", msg)
	}
}

func isOurs(obj client.Object) bool {
	return obj.GetLabels()[LabelManagedBy] == ManagedBy
}

func managedMeta(ns string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      RBACName,
		Namespace: ns,
		Labels: map[string]string{
			LabelManagedBy:           ManagedBy,
			"app.kubernetes.io/name": "k8s-elector",
		},
	}
}

// DesiredRole is the Role with exactly the rights the electors of pods
// need: their lock objects, events, and their own pods when one of them
// labels its pod (the pod-label annotation). For pods on leases without
// pod-label these are config/elector/role.yaml's rules.
func DesiredRole(ns string, pods []corev1.Pod, defaultLockType election.LockType) *rbacv1.Role {
	used := map[election.LockType]bool{}
	podLabel := false
	for _, p := range pods {
		t := defaultLockType
		if v, ok := p.Annotations[AnnotationLockType]; ok {
			// An invalid value was refused at admission; skip it rather than
			// grant something unexpected.
			parsed, err := election.ParseLockType(v)
			if err != nil {
				continue
			}
			t = parsed
		}
		if t == "" {
			t = election.LockLeases
		}
		used[t] = true
		if p.Annotations[AnnotationPodLabel] != "" {
			podLabel = true
		}
	}

	// The elector gets, creates, renews and watches its one lock object by
	// name: no list, no delete.
	lockVerbs := []string{"get", "create", "update", "watch"}
	var rules []rbacv1.PolicyRule
	for _, t := range election.LockTypes {
		if !used[t] {
			continue
		}
		group := ""
		if t == election.LockLeases {
			group = "coordination.k8s.io"
		}
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{group}, Resources: []string{string(t)}, Verbs: lockVerbs})
	}
	rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}})
	if podLabel {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}})
	}
	return &rbacv1.Role{ObjectMeta: managedMeta(ns), Rules: rules}
}

// DesiredRoleBinding binds RBACName to the service account of every pod,
// sorted so that an unchanged set of pods means an unchanged binding.
func DesiredRoleBinding(ns string, pods []corev1.Pod) *rbacv1.RoleBinding {
	var names []string
	for _, p := range pods {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		names = append(names, sa)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	subjects := make([]rbacv1.Subject, len(names))
	for i, n := range names {
		subjects[i] = rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: n, Namespace: ns}
	}
	return &rbacv1.RoleBinding{
		ObjectMeta: managedMeta(ns),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RBACName},
		Subjects:   subjects,
	}
}
