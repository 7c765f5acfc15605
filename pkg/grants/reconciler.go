package grants

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// Event reasons.
const (
	// ReasonNotManaged is the reason of the Event posted, once, on a Role or
	// RoleBinding with the name of one the reconciler would make but
	// without LabelManagedBy: it is left as it is, and nothing is bound for
	// that account until it is gone or labelled.
	ReasonNotManaged = "NotManagedByInjector"
	// ReasonNotGranted is the reason of the Event posted, once, on an
	// injected pod whose elector the reconciler grants nothing: a lock type
	// the injector does not allow, or a command line it cannot read.
	ReasonNotGranted = "ElectorNotGranted"
)

// Backoff of the checks of a Role or RoleBinding that is not the
// reconciler's. Such an object is only seen by a direct read (the cache
// holds labelled objects only), so it is read again at these intervals,
// not on every pod event: 10s first, so that a user who deletes it soon
// after the Event is served soon, then doubling to 5 minutes, the longest a
// deleted one goes unnoticed.
const (
	foreignBackoffMin = 10 * time.Second
	foreignBackoffMax = 5 * time.Minute
)

// Reconciler keeps, in each namespace with injected pods, one Role and
// RoleBinding per service account that runs an elector, granting that
// account exactly its own lock objects (see DesiredRole), and a RoleBinding
// to PodLabelClusterRole for an account whose electors label or annotate
// their pod (-pod-label or -pod-deletion-cost).
// Requests are namespaces.
//
// What an account is granted follows only from the command lines of its
// pods' elector containers, which cannot change once a pod
// exists. The admission webhook cannot do this, having no side effects (a
// dry-run pod create must not create RBAC), so this runs beside it.
type Reconciler struct {
	// Client reads from a cache set up with CacheByObject.
	Client client.Client
	// APIReader reads what the cache does not hold: a Role or RoleBinding
	// with one of the reconciler's names that someone else made.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// AllowedLockTypes are the lock types granted, the injector's
	// -allowed-lock-types. A pod whose elector uses another gets an Event
	// and no grant: its rights would be ones the admin did not enable
	// (Endpoints writes steer a Service's traffic).
	AllowedLockTypes []election.LockType
	// Clock times the backoff of foreign objects; nil is the real clock.
	Clock clock.PassiveClock

	mu sync.Mutex
	// foreign remembers the objects that are not the reconciler's, by
	// kind/namespace/name.
	foreign map[string]*foreignObject
	// reported holds, by namespace, the pods already given a
	// ReasonNotGranted Event.
	reported map[string]map[types.UID]bool
}

type foreignObject struct {
	uid             types.UID
	resourceVersion string
	next            time.Time
	backoff         time.Duration
}

// SetupWithManager checks the reconciler and registers it. It must run as
// the only writer, so the manager should use leader election.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if len(r.AllowedLockTypes) == 0 {
		return errors.New("grants: no allowed lock types: set AllowedLockTypes (the injector's -allowed-lock-types)")
	}
	for _, t := range r.AllowedLockTypes {
		if _, err := election.ParseLockType(string(t)); err != nil {
			return fmt.Errorf("grants: allowed lock types: %w", err)
		}
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("elector-grants").
		Watches(&corev1.Pod{}, byNamespace).
		// Its own objects too, so that one edited or deleted by hand is put back.
		Watches(&rbacv1.Role{}, byNamespace).
		Watches(&rbacv1.RoleBinding{}, byNamespace).
		Complete(r)
}

// Reconcile brings the Roles and RoleBindings of one namespace in line with
// the electors of its injected pods.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ns := req.Name
	log := logf.FromContext(ctx).WithValues("namespace", ns)

	// 1. What the electors of the running injected pods run, by account.
	var pods corev1.PodList
	// The pods are only read: no need to copy each from the cache.
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns),
		client.MatchingLabels{webhook.LabelInjected: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing injected pods in %s: %w", ns, err)
	}
	electors := map[string][]Elector{}
	live := map[types.UID]bool{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		live[p.UID] = true
		e, ok, err := electorOf(p)
		switch {
		case !ok:
			// Labelled before the shipped policy forbade it; nothing to grant.
			continue
		case err != nil:
			r.reportNotGranted(ctx, p, err.Error())
			continue
		case !slices.Contains(r.AllowedLockTypes, e.LockType):
			r.reportNotGranted(ctx, p, fmt.Sprintf("lock type %s is not allowed by the injector's -allowed-lock-types; "+
				"ask the cluster admin to enable it (config/components/endpoints), or use one of the allowed lock types", e.LockType))
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		electors[sa] = append(electors[sa], e)
	}
	r.forgetPods(ns, live)

	// 2. Per account: the Role, then its bindings. A Role that is not ours
	// is never bound, since its rights are unknown: the account's bindings
	// are then not wanted, and one of ours left from before goes in step 3.
	wanted := map[string]bool{}
	var errs []error
	var requeue time.Duration
	for _, a := range Accounts(electors) {
		role := DesiredRole(ns, a)
		wanted[key(role)] = true
		bindings := []*rbacv1.RoleBinding{DesiredRoleBinding(ns, a)}
		if b := DesiredPodLabelBinding(ns, a); b != nil {
			bindings = append(bindings, b)
		}
		ours, wait, err := r.ensure(ctx, role)
		requeue = soonest(requeue, wait)
		if err != nil {
			// Unknown: leave the bindings as they are until the retry.
			for _, b := range bindings {
				wanted[key(b)] = true
			}
			errs = append(errs, err)
			continue
		}
		if !ours {
			continue
		}
		for _, b := range bindings {
			wanted[key(b)] = true
			_, wait, err := r.ensure(ctx, b)
			requeue = soonest(requeue, wait)
			errs = append(errs, err)
		}
	}
	r.forgetForeign(ns, wanted)

	// 3. Delete what is ours and no longer wanted: the objects of accounts
	// that run no elector now, and the first release's LegacyName.
	errs = append(errs, r.deleteUnwanted(ctx, ns, wanted))

	if err := errors.Join(errs...); err != nil {
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			// Its pods are going too; retrying would only fill the log.
			log.V(1).Info("Namespace is being deleted; not granting")
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	log.V(1).Info("Elector grants in place", "accounts", len(electors))
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// ensure creates want, or updates the existing object of its name when it is
// ours and differs. It reports whether the object is ours; for one that is
// not, it also reports when to look again.
func (r *Reconciler) ensure(ctx context.Context, want client.Object) (ours bool, wait time.Duration, err error) {
	k := key(want)
	have := want.DeepCopyObject().(client.Object)
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), have)
	switch {
	case err == nil && isOurs(have):
		// In the cache, so labelled: ours, even if it was someone else's
		// before (labelling it hands it over).
		r.setForeign(k, nil)
		return true, 0, r.update(ctx, want, have)
	case err != nil && !apierrors.IsNotFound(err):
		return false, 0, fmt.Errorf("reading %s: %w", k, err)
	}

	// Not in the cache, which holds only labelled objects: there may still
	// be someone else's, known from before or reported by Create as
	// AlreadyExists.
	if f := r.foreignEntry(k); f != nil {
		if wait := f.next.Sub(r.Clock.Now()); wait > 0 {
			// Still backing off: not even a read.
			return false, wait, nil
		}
		return r.recheckForeign(ctx, want, f)
	}
	err = r.Client.Create(ctx, want.DeepCopyObject().(client.Object))
	if apierrors.IsAlreadyExists(err) {
		return r.recheckForeign(ctx, want, nil)
	}
	if err != nil {
		return false, 0, fmt.Errorf("creating %s: %w", k, err)
	}
	return true, 0, nil
}

// update makes have, which is ours, what want says.
func (r *Reconciler) update(ctx context.Context, want, have client.Object) error {
	k := key(want)
	switch h := have.(type) {
	case *rbacv1.Role:
		w := want.(*rbacv1.Role)
		if equality.Semantic.DeepEqual(h.Rules, w.Rules) {
			return nil
		}
		h.Rules = w.Rules
	case *rbacv1.RoleBinding:
		w := want.(*rbacv1.RoleBinding)
		if h.RoleRef != w.RoleRef {
			// The roleRef cannot change: replace the binding.
			if err := r.Client.Delete(ctx, h, client.Preconditions{UID: &h.UID}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting %s to change its roleRef: %w", k, err)
			}
			if err := r.Client.Create(ctx, w.DeepCopy()); err != nil {
				return fmt.Errorf("creating %s: %w", k, err)
			}
			return nil
		}
		if equality.Semantic.DeepEqual(h.Subjects, w.Subjects) {
			return nil
		}
		h.Subjects = w.Subjects
	}
	if err := r.Client.Update(ctx, have); err != nil {
		return fmt.Errorf("updating %s: %w", k, err)
	}
	return nil
}

// recheckForeign reads the object of want's name from the API server. One
// that is gone is created; one that is ours is left to the cache, which
// brings it soon; one that is not is remembered, and reported once per
// version, then looked at again after a growing backoff.
func (r *Reconciler) recheckForeign(ctx context.Context, want client.Object, prev *foreignObject) (bool, time.Duration, error) {
	k := key(want)
	have := want.DeepCopyObject().(client.Object)
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), have)
	switch {
	case apierrors.IsNotFound(err):
		r.setForeign(k, nil)
		err := r.Client.Create(ctx, want.DeepCopyObject().(client.Object))
		if apierrors.IsAlreadyExists(err) {
			// Made by someone in between: look again soon to tell whose.
			return false, foreignBackoffMin, nil
		}
		if err != nil {
			return false, 0, fmt.Errorf("creating %s: %w", k, err)
		}
		return true, 0, nil
	case err != nil:
		return false, 0, fmt.Errorf("reading %s: %w", k, err)
	case isOurs(have):
		r.setForeign(k, nil)
		return true, 0, nil
	}
	f := &foreignObject{uid: have.GetUID(), resourceVersion: have.GetResourceVersion(), backoff: foreignBackoffMin}
	if prev != nil && prev.uid == f.uid && prev.resourceVersion == f.resourceVersion {
		f.backoff = min(2*prev.backoff, foreignBackoffMax)
	} else {
		r.reportNotManaged(ctx, have, f.backoff)
	}
	f.next = r.Clock.Now().Add(f.backoff)
	r.setForeign(k, f)
	return false, f.backoff, nil
}

// deleteUnwanted deletes the reconciler's Roles and RoleBindings in ns that
// are not wanted. The UID precondition keeps it from deleting an object
// someone recreated under the same name since the cache saw it.
func (r *Reconciler) deleteUnwanted(ctx context.Context, ns string, wanted map[string]bool) error {
	var roles rbacv1.RoleList
	var bindings rbacv1.RoleBindingList
	if err := r.Client.List(ctx, &roles, client.InNamespace(ns), client.MatchingLabels{LabelManagedBy: ManagedBy}); err != nil {
		return fmt.Errorf("listing Roles in %s: %w", ns, err)
	}
	if err := r.Client.List(ctx, &bindings, client.InNamespace(ns), client.MatchingLabels{LabelManagedBy: ManagedBy}); err != nil {
		return fmt.Errorf("listing RoleBindings in %s: %w", ns, err)
	}
	var objs []client.Object
	// Bindings first: a binding without its Role grants nothing, but
	// deleting in this order never leaves one for a moment.
	for i := range bindings.Items {
		objs = append(objs, &bindings.Items[i])
	}
	for i := range roles.Items {
		objs = append(objs, &roles.Items[i])
	}
	var errs []error
	for _, o := range objs {
		if wanted[key(o)] || !isOurs(o) {
			continue
		}
		uid := o.GetUID()
		if err := r.Client.Delete(ctx, o, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", key(o), err))
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) reportNotManaged(ctx context.Context, obj client.Object, retry time.Duration) {
	logf.FromContext(ctx).Info("Not managing an existing object", "object", key(obj), "retryIn", retry)
	if r.Recorder == nil {
		return
	}
	r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonNotManaged, "Grant",
		"left as it is, and nothing bound for its service account: it has no label %s=%s, so the elector injector did not make it; "+
			"delete it to let the injector manage it (checked again within %s)", LabelManagedBy, ManagedBy, foreignBackoffMax)
}

// reportNotGranted posts one Event per pod: the pod's elector command line
// cannot change, so neither can the reason.
func (r *Reconciler) reportNotGranted(ctx context.Context, pod *corev1.Pod, reason string) {
	r.mu.Lock()
	if r.reported == nil {
		r.reported = map[string]map[types.UID]bool{}
	}
	if r.reported[pod.Namespace] == nil {
		r.reported[pod.Namespace] = map[types.UID]bool{}
	}
	seen := r.reported[pod.Namespace][pod.UID]
	r.reported[pod.Namespace][pod.UID] = true
	r.mu.Unlock()
	if seen {
		return
	}
	logf.FromContext(ctx).Info("Not granting the elector of a pod", "pod", pod.Namespace+"/"+pod.Name, "reason", reason)
	if r.Recorder != nil {
		r.Recorder.Eventf(pod, nil, corev1.EventTypeWarning, ReasonNotGranted, "Grant", "the elector is granted nothing: %s", reason)
	}
}

// forgetPods drops what reportNotGranted remembers of pods of ns that are gone.
func (r *Reconciler) forgetPods(ns string, live map[types.UID]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid := range r.reported[ns] {
		if !live[uid] {
			delete(r.reported[ns], uid)
		}
	}
	if len(r.reported[ns]) == 0 {
		delete(r.reported, ns)
	}
}

func (r *Reconciler) foreignEntry(k string) *foreignObject {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.foreign[k]
}

func (r *Reconciler) setForeign(k string, f *foreignObject) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f == nil {
		delete(r.foreign, k)
		return
	}
	if r.foreign == nil {
		r.foreign = map[string]*foreignObject{}
	}
	r.foreign[k] = f
}

// forgetForeign drops what is remembered of foreign objects in ns whose
// names the reconciler no longer wants.
func (r *Reconciler) forgetForeign(ns string, wanted map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.foreign {
		if strings.Split(k, "/")[1] == ns && !wanted[k] {
			delete(r.foreign, k)
		}
	}
}

// key names an object in logs, errors and the reconciler's memory:
// Kind/namespace/name.
func key(obj client.Object) string {
	kind := "Role"
	if _, ok := obj.(*rbacv1.RoleBinding); ok {
		kind = "RoleBinding"
	}
	return kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

func isOurs(obj client.Object) bool {
	return obj.GetLabels()[LabelManagedBy] == ManagedBy
}

func soonest(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}
