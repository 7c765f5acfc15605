package grants

import (
	"context"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestForeignObjectBackoff is the reconciler's memory of a Role it did not
// make, on a fake client and clock (the API server's side is in
// test/injector): one Event per version of the object, no API call while
// backing off however many pod events come, a backoff that doubles to its
// cap, and the Role made once the foreign one is gone.
func TestForeignObjectBackoff(t *testing.T) {
	ctx := context.Background()
	const ns = "ns"
	pod := podWithElector("app", true, "-election=x")
	pod.Namespace, pod.UID = ns, "pod-uid"
	pod.Labels = map[string]string{webhook.LabelInjected: "true"}
	foreign := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: RoleName("app"), Namespace: ns, UID: "foreign-uid"}}

	calls := 0
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(&pod, foreign).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*rbacv1.Role); ok && key.Name == foreign.Name {
					calls++
				}
				return c.Get(ctx, key, obj, opts...)
			},
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if _, ok := obj.(*rbacv1.Role); ok && obj.GetName() == foreign.Name {
					calls++
				}
				return c.Create(ctx, obj, opts...)
			},
		}).Build()
	// The fake client's Get finds unlabelled objects, which the real cache
	// does not hold: hide them, as the cache would.
	cache := labelledOnly{c}
	recorder := events.NewFakeRecorder(10)
	clock := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	r := &Reconciler{Client: cache, APIReader: c, Recorder: recorder, AllowedLockTypes: []election.LockType{election.LockLeases}, Clock: clock}

	reconcile := func(wantRequeue time.Duration, wantCalls, wantEvents int) {
		t.Helper()
		calls = 0
		res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: ns}})
		if err != nil {
			t.Fatal(err)
		}
		if res.RequeueAfter != wantRequeue {
			t.Errorf("requeue after %s, want %s", res.RequeueAfter, wantRequeue)
		}
		// Two calls per look: the cache's Get, then the API reader's or Create.
		if calls != wantCalls {
			t.Errorf("%d reads and creates of the Role, want %d", calls, wantCalls)
		}
		if got := len(recorder.Events); got != wantEvents {
			t.Errorf("%d Events, want %d", got, wantEvents)
		}
		for range len(recorder.Events) {
			<-recorder.Events
		}
	}

	reconcile(10*time.Second, 3, 1) // cache Get, Create (AlreadyExists), API Get; one Event
	for range 5 {
		reconcile(10*time.Second, 1, 0) // only the cache
	}
	clock.SetTime(clock.Now().Add(10 * time.Second))
	reconcile(20*time.Second, 2, 0) // looked at again, unchanged: no Event
	for _, want := range []time.Duration{40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute} {
		clock.SetTime(clock.Now().Add(time.Hour))
		reconcile(want, 2, 0)
	}

	// A new version of it is reported again, and the backoff starts over.
	foreign.Rules = []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}
	if err := c.Update(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	clock.SetTime(clock.Now().Add(time.Hour))
	reconcile(10*time.Second, 2, 1)

	// Gone: the reconciler's own Role and RoleBinding are made.
	if err := c.Delete(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	clock.SetTime(clock.Now().Add(time.Hour))
	reconcile(0, 3, 0) // cache Get, API Get (not found), Create
	var binding rbacv1.RoleBinding
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: RoleName("app")}, &binding); err != nil {
		t.Errorf("no RoleBinding once the foreign Role is gone: %v", err)
	}
}

// labelledOnly hides Roles and RoleBindings without LabelManagedBy from
// Get, as the reconciler's cache does.
type labelledOnly struct{ client.Client }

func (l labelledOnly) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := l.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	switch obj.(type) {
	case *rbacv1.Role, *rbacv1.RoleBinding:
		if !isOurs(obj) {
			return notFound(obj, key.Name)
		}
	}
	return nil
}

func notFound(obj client.Object, name string) error {
	resource := "roles"
	if _, ok := obj.(*rbacv1.RoleBinding); ok {
		resource = "rolebindings"
	}
	return apierrors.NewNotFound(schema.GroupResource{Group: rbacv1.GroupName, Resource: resource}, name)
}

// TestForeignRoleIsNeverBound: a binding of ours left from before, to a
// Role now replaced by someone else's of the same name, is deleted rather
// than left binding rights the reconciler does not know.
func TestForeignRoleIsNeverBound(t *testing.T) {
	ctx := context.Background()
	const ns = "ns"
	pod := podWithElector("app", true, "-election=x")
	pod.Namespace, pod.UID = ns, "pod-uid"
	pod.Labels = map[string]string{webhook.LabelInjected: "true"}
	a := Accounts(map[string][]Elector{"app": {{Election: "x", LockType: election.LockLeases}}})[0]
	foreign := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: RoleName("app"), Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(&pod, foreign, DesiredRoleBinding(ns, a)).Build()
	r := &Reconciler{Client: labelledOnly{c}, APIReader: c, Recorder: events.NewFakeRecorder(10),
		AllowedLockTypes: []election.LockType{election.LockLeases}, Clock: clocktesting.NewFakePassiveClock(time.Unix(1000, 0))}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	var bindings rbacv1.RoleBindingList
	if err := c.List(ctx, &bindings, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(bindings.Items) != 0 {
		t.Errorf("bindings to a foreign Role remain: %+v", bindings.Items)
	}
}
