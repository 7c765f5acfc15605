package grants

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestTrimPodKeepsWhatTheReconcilerReads checks that the cache's trimmed
// pods yield the same elector and account as whole ones, and count as
// outdated or not as whole ones do, and drop the rest.
func TestTrimPodKeepsWhatTheReconcilerReads(t *testing.T) {
	for _, native := range []bool{true, false} {
		pod := podWithElector("app", native, "-election=a", "-lock-type=configmaps", "-pod-label=role", "-leader-service=a-leader")
		pod.UID = "uid-p"
		pod.Namespace = "ns"
		pod.Spec.NodeName = "node-a"
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP = "10.1.2.3"
		pod.Status.PodIPs = []corev1.PodIP{{IP: "10.1.2.3"}, {IP: "fd00::3"}}
		pod.Status.HostIP = "192.0.2.1"
		pod.Labels = map[string]string{webhook.LabelInjected: "true", "app": "x"}
		marks := map[string]string{
			webhook.AnnotationStatus:          webhook.StatusInjected,
			webhook.AnnotationInjectorVersion: testVersion,
			webhook.AnnotationInjectedImage:   "example.com/elector:v2",
			webhook.AnnotationImage:           "example.com/elector:v2",
		}
		for k, v := range marks {
			pod.Annotations[k] = v
		}
		out, err := trimPod(&pod)
		if err != nil {
			t.Fatal(err)
		}
		trimmed := out.(*corev1.Pod)
		whole, _, _ := electorOf(&pod)
		got, found, err := electorOf(trimmed)
		if !found || err != nil {
			t.Fatalf("trimmed pod: found %v, err %v", found, err)
		}
		if diff := cmp.Diff(whole, got); diff != "" {
			t.Errorf("elector of the trimmed pod (-whole +trimmed):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]string{webhook.LabelInjected: "true"}, trimmed.Labels); diff != "" {
			t.Errorf("labels of the trimmed pod (-want +got):\n%s", diff)
		}
		if trimmed.Spec.ServiceAccountName != "app" || trimmed.Status.Phase != corev1.PodRunning {
			t.Errorf("trimmed pod lost its service account or phase: %+v", trimmed)
		}
		if diff := cmp.Diff(marks, trimmed.Annotations); diff != "" {
			t.Errorf("annotations of the trimmed pod (-want +got):\n%s", diff)
		}
		// The EndpointSlice webhook decides on the trimmed pod as on the
		// whole one, for the pod's own address and for another.
		for _, addr := range []string{"10.1.2.3", "fd00::3", "10.1.2.4", "192.0.2.1"} {
			wholeErr, trimmedErr := reviewLeaderSlice(&pod, addr), reviewLeaderSlice(trimmed, addr)
			if fmt.Sprint(wholeErr) != fmt.Sprint(trimmedErr) {
				t.Errorf("the webhook decides %s otherwise on the trimmed pod: %v, on the whole one: %v", addr, trimmedErr, wholeErr)
			}
			if allowed := wholeErr == nil; allowed != (addr == "10.1.2.3" || addr == "fd00::3") {
				t.Errorf("the webhook decides %s: %v", addr, wholeErr)
			}
		}
		if !counted(trimmed) || outdated(trimmed, testVersion, testImage) != outdated(&pod, testVersion, testImage) {
			t.Errorf("the trimmed pod is not counted as the whole one: counted %v, outdated %v, whole %v",
				counted(trimmed), outdated(trimmed, testVersion, testImage), outdated(&pod, testVersion, testImage))
		}
		if len(trimmed.Spec.Containers) != 1 || len(trimmed.Spec.InitContainers) != 0 || trimmed.Spec.Containers[0].Image != "" ||
			trimmed.Spec.Containers[0].Env != nil {
			t.Errorf("trimPod kept what the reconciler does not read: %+v", trimmed)
		}
	}

	// Without any of the annotations, it keeps none.
	pod := podWithElector("app", true, "-election=a")
	out, err := trimPod(&pod)
	if err != nil {
		t.Fatal(err)
	}
	if a := out.(*corev1.Pod).Annotations; a != nil {
		t.Errorf("trimPod kept annotations of a pod without marks: %v", a)
	}
}
