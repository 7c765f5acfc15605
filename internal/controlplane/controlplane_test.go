package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestControlPlane proves the ground the other tests stand on: the
// project-built control plane starts, reports the pinned version, stores a
// Lease, and stops without leaving a process behind.
func TestControlPlane(t *testing.T) {
	env, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	apiDir := env.Env.ControlPlane.APIServer.CertDir
	etcdDir := env.Env.ControlPlane.Etcd.DataDir
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = env.Stop()
		}
	})

	info, err := env.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if info.GitVersion != "v1.37.2" {
		t.Errorf("server version = %q, want v1.37.2 (the version hack/envtest.sh stamps)", info.GitVersion)
	}

	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "ground", Namespace: ns},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a"), LeaseDurationSeconds: ptr.To[int32](10)},
	}
	if _, err := env.Client.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create lease: %v", err)
	}
	got, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, "ground", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get lease: %v", err)
	}
	if h := ptr.Deref(got.Spec.HolderIdentity, ""); h != "a" {
		t.Errorf("lease holder = %q, want a", h)
	}

	if len(Processes(apiDir)) == 0 || len(Processes(etcdDir)) == 0 {
		t.Fatalf("no kube-apiserver (%v) or etcd (%v) process found while running", Processes(apiDir), Processes(etcdDir))
	}
	stopped = true
	if err := env.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if pids := Processes(apiDir); len(pids) > 0 {
		t.Errorf("kube-apiserver still running after Stop: %v", pids)
	}
	if pids := Processes(etcdDir); len(pids) > 0 {
		t.Errorf("etcd still running after Stop: %v", pids)
	}
}

// TestControllerManager checks that with the controller manager a
// Deployment yields Pods, which the injector's tests rely on, and that Stop
// leaves none of the three processes behind.
func TestControllerManager(t *testing.T) {
	env, err := Start(Options{ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = env.Stop()
		}
	})
	assets, err := Assets()
	if err != nil {
		t.Fatal(err)
	}
	running := controlPlaneChildren(t, assets)
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if running[name] == 0 {
			t.Fatalf("no %s process started by this test is running (running: %v)", name, running)
		}
	}
	defer func() {
		stopped = true
		if err := env.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if left := controlPlaneChildren(t, assets); len(left) > 0 {
			t.Errorf("left behind after Stop: %v", left)
		}
	}()
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		sa, err := env.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil && sa.Name == "default" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no default service account in %s: %v", ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	labels := map[string]string{"app": "ground"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "ground", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			},
		},
	}
	if _, err := env.Client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	for {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=ground"})
		if err == nil && len(pods.Items) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the deployment made no 2 pods: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// controlPlaneChildren counts, by binary, the live processes this test
// process started from the control plane's binaries in assets.
func controlPlaneChildren(t *testing.T, assets string) map[string]int {
	t.Helper()
	known := map[string]string{}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		path, err := filepath.EvalSymlinks(filepath.Join(assets, name))
		if err != nil {
			t.Fatal(err)
		}
		known[path] = name
	}
	entries, _ := os.ReadDir("/proc")
	out := map[string]int{}
	for _, entry := range entries {
		if _, err := strconv.Atoi(entry.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...", comm may hold spaces.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[0] == "Z" || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", entry.Name(), "exe"))
		if name, ok := known[exe]; err == nil && ok {
			out[name]++
		}
	}
	return out
}

// TestFaults injects the control plane's own faults and checks what each
// promises: a frozen kube-apiserver answers nothing and a thawed one answers
// again; a restarted kube-apiserver is a new process on the same port,
// certificates and etcd data, so the Env's client works and the objects
// are still there; a restarted etcd keeps its data. Stop then leaves none
// of the processes the Env started behind.
func TestFaults(t *testing.T) {
	logDir := t.TempDir()
	env, err := Start(Options{LogDir: logDir})
	if err != nil {
		t.Fatal(err)
	}
	apiDir := env.Env.ControlPlane.APIServer.CertDir
	etcdDir := env.Env.ControlPlane.Etcd.DataDir
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = env.Stop()
		}
	})
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	leases := env.Client.CoordinationV1().Leases(ns)
	created, err := leases.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kept", Namespace: ns},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create lease: %v", err)
	}
	kept := func(when string) {
		t.Helper()
		got, err := leases.Get(ctx, "kept", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: get lease with the Env's client: %v", when, err)
		}
		if got.UID != created.UID || ptr.Deref(got.Spec.HolderIdentity, "") != "a" {
			t.Fatalf("%s: lease is %s held by %q, want the one created (%s, held by a)", when, got.UID, ptr.Deref(got.Spec.HolderIdentity, ""), created.UID)
		}
	}

	if err := env.Freeze(); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	_, err = leases.Get(short, "kept", metav1.GetOptions{})
	cancelShort()
	if err == nil {
		t.Errorf("a frozen kube-apiserver answered a read")
	}
	if err := env.Thaw(); err != nil {
		t.Fatal(err)
	}
	kept("after thaw")

	oldAPI := env.apiServer.pid
	r, err := env.RestartAPIServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if env.apiServer.pid == oldAPI {
		t.Errorf("kube-apiserver has pid %d before and after the restart", oldAPI)
	}
	if r.Killed.IsZero() || r.Up.Before(r.Killed) || r.Ready.Before(r.Up) {
		t.Errorf("restart steps out of order: killed %s, up %s, ready %s", r.Killed, r.Up, r.Ready)
	}
	t.Logf("kube-apiserver restart: up %s and ready %s after the kill", r.Up.Sub(r.Killed), r.Ready.Sub(r.Killed))
	if _, err := os.Stat(filepath.Join(logDir, "kube-apiserver.1.log")); err != nil {
		t.Errorf("no log of the restarted kube-apiserver: %v", err)
	}
	kept("after restarting kube-apiserver")
	oldEtcd := env.etcd.pid
	if r, err = env.RestartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd restart: up %s and kube-apiserver ready %s after the kill", r.Up.Sub(r.Killed), r.Ready.Sub(r.Killed))
	if env.etcd.pid == oldEtcd {
		t.Errorf("etcd has pid %d before and after the restart", oldEtcd)
	}
	kept("after restarting etcd")
	got, err := leases.Get(ctx, "kept", metav1.GetOptions{})
	if err == nil {
		got.Spec.HolderIdentity = ptr.To("b")
		_, err = leases.Update(ctx, got, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Errorf("update the lease after the restarts: %v", err)
	}

	// Stop resumes a frozen kube-apiserver before it ends it.
	if err := env.Freeze(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := env.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if pids := Processes(apiDir); len(pids) > 0 {
		t.Errorf("kube-apiserver still running after Stop: %v", pids)
	}
	if pids := Processes(etcdDir); len(pids) > 0 {
		t.Errorf("etcd still running after Stop: %v", pids)
	}
}
