package attack

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The objects an attack aims at are made by the admin first, so that a
// refusal can only be a refusal, never a NotFound.

// victimLease makes a Lease held by someone else: another controller's
// leader election.
func victimLease(t *testing.T, ns, name string) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: new("victim"), LeaseDurationSeconds: new(int32(15))},
	}
	l, err := env.Client.CoordinationV1().Leases(ns).Create(ctxFor(t, 10*time.Second), l, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		l, err = env.Client.CoordinationV1().Leases(ns).Get(ctxFor(t, 10*time.Second), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// victimConfigMap makes a ConfigMap that is no lock: an app's settings.
func victimConfigMap(t *testing.T, ns, name string, data map[string]string) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctxFor(t, 10*time.Second), cm, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

// takeLease is the hijack: rewrite the holder of a Lease, as cs.
func takeLease(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity = new("attacker")
	_, err = cs.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// holder reads who holds a Lease, as the admin.
func holder(t *testing.T, ns, name string) string {
	t.Helper()
	l, err := env.Client.CoordinationV1().Leases(ns).Get(ctxFor(t, 10*time.Second), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// mergePatch sends a JSON merge patch of obj to the pod, as cs.
func mergePatch(ctx context.Context, cs kubernetes.Interface, ns, pod string, obj map[string]any) error {
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, body, metav1.PatchOptions{})
	return err
}

// labels is a merge patch of a pod's labels; a nil value removes the label.
func labels(kv map[string]any) map[string]any {
	return map[string]any{"metadata": map[string]any{"labels": kv}}
}

// setImage is a strategic merge patch that changes the image of container,
// among the containers or the init containers (where a native sidecar is).
func setImage(ctx context.Context, cs kubernetes.Interface, ns, pod, container, image string) error {
	p, err := env.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	list := "containers"
	for _, c := range p.Spec.InitContainers {
		if c.Name == container {
			list = "initContainers"
		}
	}
	body, err := json.Marshal(map[string]any{"spec": map[string]any{list: []map[string]any{{"name": container, "image": image}}}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Pods(ns).Patch(ctx, pod, types.StrategicMergePatchType, body, metav1.PatchOptions{})
	return err
}

// imageOf reads the image of a pod's container, as the admin.
func imageOf(t *testing.T, ns, pod, container string) string {
	t.Helper()
	p, err := env.Client.CoreV1().Pods(ns).Get(ctxFor(t, 10*time.Second), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == container {
			return c.Image
		}
	}
	t.Fatalf("pod %s/%s has no container %s", ns, pod, container)
	return ""
}

// systemPod makes a pod in kube-system, where the webhook never goes: the
// kind of pod a stolen token would be used against.
func systemPod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "attack-target"}}
	if _, err := env.Client.CoreV1().ServiceAccounts("kube-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p, err := env.Client.CoreV1().Pods("kube-system").Create(ctx, plainPod(name, "attack-target", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Pods("kube-system").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
	})
	return p
}
