package attack

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// clientFor talks to the API server with token and nothing else.
func clientFor(t *testing.T, token string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(tokenConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func tokenConfig(token string) *rest.Config {
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token
	return cfg
}

// injectorClient acts as the injector's service account.
func injectorClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	token, err := controlplane.Token(ctxFor(t, 10*time.Second), env.Client, controlplane.InjectorNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	return clientFor(t, token)
}

// app is a namespace of its own with a deployer: a service account that
// may do anything to pods there, and nothing else, as a CI pipeline's or a
// developer's account commonly may.
type app struct {
	t              *testing.T
	ns             string
	deployer       kubernetes.Interface
	deployerConfig *rest.Config
}

func newApp(t *testing.T) *app {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	a := &app{t: t, ns: env.Namespace(t)}
	a.account("deployer")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"pods"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"},
		}},
	}
	if _, err := env.Client.RbacV1().Roles(a.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "deployer"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "deployer", Namespace: a.ns}},
	}
	if _, err := env.Client.RbacV1().RoleBindings(a.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := controlplane.Token(ctx, env.Client, a.ns, "deployer", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.deployerConfig = tokenConfig(token)
	a.deployer = clientFor(t, token)
	return a
}

// account creates a service account in the app's namespace.
func (a *app) account(name string) {
	a.t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := env.Client.CoreV1().ServiceAccounts(a.ns).Create(ctxFor(a.t, 10*time.Second), sa, metav1.CreateOptions{}); err != nil {
		a.t.Fatal(err)
	}
}

// pod creates, as the deployer, a pod that runs as sa with annotations
// (and whatever edit makes to it first), and returns it as stored.
func (a *app) pod(name, sa string, annotations map[string]string, edit ...func(*corev1.Pod)) *corev1.Pod {
	a.t.Helper()
	p, err := a.createPod(name, sa, annotations, edit...)
	if err != nil {
		a.t.Fatalf("creating pod %s as the deployer: %v", name, err)
	}
	return p
}

func (a *app) createPod(name, sa string, annotations map[string]string, edit ...func(*corev1.Pod)) (*corev1.Pod, error) {
	p := plainPod(name, sa, annotations)
	for _, e := range edit {
		e(p)
	}
	return a.deployer.CoreV1().Pods(a.ns).Create(ctxFor(a.t, 30*time.Second), p, metav1.CreateOptions{})
}

// electorUserAgent is the user agent of the elector binary, and so the
// manager its writes are recorded under in a lock's managedFields: the
// policy k8s-elector-lock lets electors take over only locks an elector
// wrote. An attacker chooses its user agent freely; a client with an
// elector's token calls itself the same, to be given every chance.
const electorUserAgent = "k8s-elector"

// elector returns a client with the token the kubelet would give the
// elector of pod: its service account's, bound to the pod.
func (a *app) elector(pod *corev1.Pod) kubernetes.Interface {
	a.t.Helper()
	sa := pod.Spec.ServiceAccountName
	token, err := controlplane.Token(ctxFor(a.t, 10*time.Second), env.Client, a.ns, sa, pod)
	if err != nil {
		a.t.Fatal(err)
	}
	cfg := tokenConfig(token)
	cfg.UserAgent = electorUserAgent
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	return cs
}

// get reads a pod as the admin.
func (a *app) get(name string) *corev1.Pod {
	a.t.Helper()
	p, err := env.Client.CoreV1().Pods(a.ns).Get(ctxFor(a.t, 10*time.Second), name, metav1.GetOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	return p
}

var barriers atomic.Int64

// barrier waits until the injector's reconciler has caught up with what
// happened so far in the namespace: it injects a pod of a fresh service
// account and election, and waits for that account's grant. An attack
// that must not earn a grant is checked after a barrier, so that "not
// granted" means "not granted once the reconciler had seen it", not "not
// granted yet".
func (a *app) barrier() {
	a.t.Helper()
	n := barriers.Add(1)
	name := fmt.Sprintf("barrier-%d", n)
	a.account(name)
	p := a.pod(name, name, map[string]string{webhook.AnnotationElection: name})
	group, resource := lockOf(a.t, p)
	waitAllowed(a.t, a.elector(p), a.ns, "update", group, resource, name)
}

// lockOf reads the lock resource from the -lock-type of pod's elector, as
// the injector wrote it: leases when there is none.
func lockOf(t *testing.T, pod *corev1.Pod) (group, resource string) {
	t.Helper()
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name != webhook.ContainerName {
			continue
		}
		resource = "leases"
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "-"+election.FlagLockType+"="); ok {
				resource = v
			}
		}
		if resource == "leases" {
			group = "coordination.k8s.io"
		}
		return group, resource
	}
	t.Fatalf("pod %s has no %s container", pod.Name, webhook.ContainerName)
	return "", ""
}

// plainPod is a pod that passes Pod Security "restricted" and runs as sa.
func plainPod(name, sa string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   new(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.k8s.io/pause:3.10",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: new(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// can asks the authorizer, as the holder of cs, whether it may do verb on
// group/resource name in ns (all names when name is empty).
func can(t *testing.T, cs kubernetes.Interface, ns, verb, group, resource, name string) bool {
	t.Helper()
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctxFor(t, 10*time.Second), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Verb: verb, Group: group, Resource: resource, Name: name,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("access review: %v", err)
	}
	return r.Status.Allowed
}

// waitAllowed waits for the grant that lets cs do verb on resource name.
func waitAllowed(t *testing.T, cs kubernetes.Interface, ns, verb, group, resource, name string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if !can(t, cs, ns, verb, group, resource, name) {
			return fmt.Errorf("may not %s %s %s/%s", verb, strings.TrimSuffix(resource+"."+group, "."), ns, name)
		}
		return nil
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls f every 100ms until it returns nil, and fails the test
// with f's last error once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
