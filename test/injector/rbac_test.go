package injector

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestReconcilerGrantsAnElection: the Role and RoleBinding the reconciler
// makes let the pod's service account run an election, and nothing more.
func TestReconcilerGrantsAnElection(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 60*time.Second)
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx,
		electorPod("app-0", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var binding *rbacv1.RoleBinding
	eventually(t, 20*time.Second, func() error {
		var err error
		binding, err = env.Client.RbacV1().RoleBindings(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
		return err
	})
	role, err := env.Client.RbacV1().Roles(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if role.Labels[webhook.LabelManagedBy] != webhook.ManagedBy || binding.Labels[webhook.LabelManagedBy] != webhook.ManagedBy {
		t.Errorf("Role labels %v, RoleBinding labels %v; want %s=%s", role.Labels, binding.Labels, webhook.LabelManagedBy, webhook.ManagedBy)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Name != "app" {
		t.Errorf("RoleBinding subjects = %+v, want the service account app", binding.Subjects)
	}

	token, err := serviceAccountToken(ctx, ns, "app")
	if err != nil {
		t.Fatal(err)
	}
	// The elector, as the pod's service account, becomes leader.
	addr := startElector(t, kubeconfigFor(t, token), ns, "my-app")
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

	// And cannot read Secrets.
	sa := clientFor(t, token)
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets as the pod's service account: err = %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(ns).Get(ctx, "anything", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("getting a Secret as the pod's service account: err = %v, want Forbidden", err)
	}

	// With the last injected pod gone, the reconciler removes its own RBAC.
	if err := env.Client.CoreV1().Pods(ns).Delete(ctx, "app-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		_, errRole := env.Client.RbacV1().Roles(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
		_, errBinding := env.Client.RbacV1().RoleBindings(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
		if !apierrors.IsNotFound(errRole) || !apierrors.IsNotFound(errBinding) {
			return fmt.Errorf("Role: %v, RoleBinding: %v; want both deleted", errRole, errBinding)
		}
		return nil
	})
}

// TestReconcilerLeavesUserRole: a Role named like the reconciler's but not
// made by it is reported and left exactly as it is, and not bound.
func TestReconcilerLeavesUserRole(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	user := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: webhook.RBACName, Labels: map[string]string{"owner": "me"}},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}},
	}
	user, err := env.Client.RbacV1().Roles(ns).Create(ctx, user, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx,
		electorPod("app-0", "app", map[string]string{webhook.AnnotationElection: "my-app", webhook.AnnotationPodLabel: "example.com/role"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		events, err := env.Client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("reason", webhook.ReasonNotManaged).String(),
		})
		if err != nil {
			return err
		}
		if len(events.Items) == 0 {
			return fmt.Errorf("no %s Event", webhook.ReasonNotManaged)
		}
		if r := events.Items[0].Regarding; r.Kind != "Role" || r.Name != webhook.RBACName {
			return fmt.Errorf("the Event is about %s %s, want the Role", r.Kind, r.Name)
		}
		return nil
	})
	got, err := env.Client.RbacV1().Roles(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != user.ResourceVersion {
		t.Errorf("the user's Role was changed: resourceVersion %s -> %s, rules %+v", user.ResourceVersion, got.ResourceVersion, got.Rules)
	}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a RoleBinding to the user's Role was made: err = %v, want not found", err)
	}
}

var listening = regexp.MustCompile(`msg="serving leader state" address=(\S+)`)

// startElector runs the elector binary and returns the address of its HTTP API.
func startElector(t *testing.T, kubeconfig, ns, name string) string {
	t.Helper()
	cmd := exec.Command(electorBin, "-"+election.FlagElection+"="+name, "-"+election.FlagNamespace+"="+ns,
		"-id=test", "-kubeconfig="+kubeconfig, "-http=127.0.0.1:0", "-ttl=3s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-scanned
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("elector logs:\n%s", logs.String())
		}
	})
	select {
	case a := <-addr:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("the elector did not serve within 20s")
		return ""
	}
}

func status(addr string) (election.Status, error) {
	var st election.Status
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + election.PathStatus)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// TestReconcilerFollowsPods: the Role and RoleBinding grow and shrink with
// the lock types, pod-label use and service accounts of the injected pods,
// and are put back when deleted by hand.
func TestReconcilerFollowsPods(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "a")
	serviceAccount(t, ns, "b")
	ctx := ctxFor(t, 60*time.Second)
	create := func(name, sa string, annotations map[string]string) {
		t.Helper()
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, electorPod(name, sa, annotations), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// want waits until the Role grants resources and the binding names subjects.
	want := func(resources, subjects []string) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			role, err := env.Client.RbacV1().Roles(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			binding, err := env.Client.RbacV1().RoleBindings(ns).Get(ctx, webhook.RBACName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var gotResources, gotSubjects []string
			for _, r := range role.Rules {
				gotResources = append(gotResources, r.Resources...)
			}
			for _, s := range binding.Subjects {
				gotSubjects = append(gotSubjects, s.Name)
			}
			if strings.Join(gotResources, ",") != strings.Join(resources, ",") || strings.Join(gotSubjects, ",") != strings.Join(subjects, ",") {
				return fmt.Errorf("Role grants %v to %v, want %v to %v", gotResources, gotSubjects, resources, subjects)
			}
			return nil
		})
	}

	create("a-0", "a", map[string]string{webhook.AnnotationElection: "x"})
	want([]string{"leases", "events"}, []string{"a"})
	create("b-0", "b", map[string]string{webhook.AnnotationElection: "y", webhook.AnnotationLockType: "configmaps", webhook.AnnotationPodLabel: "example.com/role"})
	want([]string{"leases", "configmaps", "events", "pods"}, []string{"a", "b"})

	if err := env.Client.RbacV1().Roles(ns).Delete(ctx, webhook.RBACName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want([]string{"leases", "configmaps", "events", "pods"}, []string{"a", "b"})

	if err := env.Client.CoreV1().Pods(ns).Delete(ctx, "b-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
		t.Fatal(err)
	}
	want([]string{"leases", "events"}, []string{"a"})
}
