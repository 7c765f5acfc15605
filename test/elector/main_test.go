// Package elector tests the elector against the local control plane: as
// processes (elections on every lock type, handover, crash failover, an
// API-server outage, a frozen leader, the upstream record format, the
// shipped RBAC and the regressions found by adversarial testing), and in
// this process, where the race detector sees the election loop, its watch
// and its HTTP server. In every process test a watcher polls each
// participant and fails the test if two ever lead at once, or if a new
// leader starts less than ttl - renew deadline after the old one last said
// it led.
package elector

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// binaryEnv names an elector binary to test instead of building
// cmd/elector, such as a release, to see which regression tests it fails.
const binaryEnv = "ELECTOR_TEST_BINARY"

var (
	env        *controlplane.Env
	electorBin string
	// adminKubeconfig talks to the API server as cluster admin.
	adminKubeconfig string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "elector-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if electorBin = os.Getenv(binaryEnv); electorBin == "" {
		electorBin = filepath.Join(dir, "elector")
		buildArgs := []string{"build", "-o", electorBin}
		if raceEnabled {
			// The electors run with the race detector when the tests do: a
			// data race in the elector then ends its process, which fails
			// the test.
			buildArgs = append(buildArgs, "-race")
		}
		build := exec.Command("go", append(buildArgs, "github.com/vapor-ware/k8s-elector/cmd/elector")...)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build elector:", err)
			return 1
		}
	}

	env, err = controlplane.Start(controlplane.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	admin, err := env.Env.AddUser(envtest.User{Name: "elector-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kc, err := admin.KubeConfig()
	if err == nil {
		adminKubeconfig = filepath.Join(dir, "admin.kubeconfig")
		err = os.WriteFile(adminKubeconfig, kc, 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// viaProxy rewrites a kubeconfig to reach the API server through p.
func viaProxy(t *testing.T, kubeconfig string, p *proxy) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + p.addr
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tempFile(t, "proxy.kubeconfig", out)
}

// serviceAccountKubeconfig makes a service account in ns bound to the Roles
// that config/elector ships (all of them when podLabel, else the first),
// and returns a kubeconfig with a token for it.
func serviceAccountKubeconfig(t *testing.T, ns string, podLabel bool) string {
	t.Helper()
	kubeconfig := unboundAccount(t, ns)
	bindShippedRoles(t, ns, podLabel)
	return kubeconfig
}

// unboundAccount makes the service account "elector" in ns with no rights
// yet, and returns a kubeconfig with a token for it.
func unboundAccount(t *testing.T, ns string) string {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "elector", Namespace: ns}}
	if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := controlplane.Token(ctx, env.Client, ns, sa.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return writeKubeconfig(t, env.Config, token)
}

// accountWithRules makes the service account "elector" in ns bound to one
// Role with rules, and returns a kubeconfig with a token for it (a
// TokenRequest token, as a pod's projected volume holds).
func accountWithRules(t *testing.T, ns string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	kubeconfig := unboundAccount(t, ns)
	ctx := ctxFor(t, 30*time.Second)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "elector", Namespace: ns}, Rules: rules}
	if _, err := env.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "elector", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "elector", Namespace: ns}},
	}
	if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

// electionRules are the narrowest rights for one election on a lock type:
// get, update and (with watch) watch on the lock object by name, create on
// its type (create cannot be limited by name), events create, and with
// podLabel pods get and patch.
func electionRules(lock election.LockType, name string, watch, podLabel bool) []rbacv1.PolicyRule {
	group := ""
	if lock == election.LockLeases {
		group = "coordination.k8s.io"
	}
	verbs := []string{"get", "update"}
	if watch {
		verbs = append(verbs, "watch")
	}
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{group}, Resources: []string{string(lock)}, ResourceNames: []string{name}, Verbs: verbs},
		{APIGroups: []string{group}, Resources: []string{string(lock)}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	}
	if podLabel {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}})
	}
	return rules
}

// bindShippedRoles creates the Roles of config/elector (all of them when
// podLabel, else the first) in ns and binds them to the service account
// "elector".
func bindShippedRoles(t *testing.T, ns string, podLabel bool) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	roles := shippedRoles(t)
	if !podLabel {
		roles = roles[:1]
	}
	for _, role := range roles {
		role.Namespace = ns
		// The shipped Role names the sample's election: ours is another.
		for i := range role.Rules {
			for j, name := range role.Rules[i].ResourceNames {
				if name == shippedElection {
					role.Rules[i].ResourceNames[j] = electionName
				}
			}
		}
		if _, err := env.Client.RbacV1().Roles(ns).Create(ctx, &role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "elector", Namespace: ns}},
		}
		if _, err := env.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// shippedElection is the election config/elector/role.yaml grants, by name.
const shippedElection = "example"

// shippedRoles reads config/elector/role.yaml: the elector's Role, then
// the Role for -pod-label.
func shippedRoles(t *testing.T) []rbacv1.Role {
	t.Helper()
	roles, err := controlplane.ReadRoles("../../config/elector/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) != 2 {
		t.Fatalf("config/elector/role.yaml has %d Roles, want 2", len(roles))
	}
	return roles
}

func writeKubeconfig(t *testing.T, cfg *rest.Config, token string) string {
	t.Helper()
	out, err := controlplane.Kubeconfig(cfg, token)
	if err != nil {
		t.Fatal(err)
	}
	return tempFile(t, "sa.kubeconfig", out)
}
