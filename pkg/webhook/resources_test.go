package webhook

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

// TestPodBudget checks the pod-level budget inject writes for pod shapes
// that the golden files do not show. Each want is what Kubernetes'
// DefaultPodLevelResources settles on for the pod as given, plus the
// sidecar's share (10m/24Mi requested, 100m/64Mi limits).
func TestPodBudget(t *testing.T) {
	list := func(kv ...string) corev1.ResourceList {
		l := corev1.ResourceList{}
		for i := 0; i < len(kv); i += 2 {
			l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return l
	}
	container := func(name string, requests, limits corev1.ResourceList) corev1.Container {
		return corev1.Container{Name: name, Image: "registry.example.com/" + name, Resources: corev1.ResourceRequirements{Requests: requests, Limits: limits}}
	}
	native := func(c corev1.Container) corev1.Container {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
		return c
	}

	tests := []struct {
		name       string
		pod        corev1.ResourceRequirements
		inits      []corev1.Container
		containers []corev1.Container
		want       *corev1.ResourceRequirements
		qos        bool // whether the pod is Guaranteed, before and after
	}{
		{
			// A native sidecar runs beside the app; the init container after
			// it runs beside the sidecar alone: max(100m+300m, 100m+50m).
			name:       "requests left to the containers, with native sidecars",
			pod:        corev1.ResourceRequirements{Limits: list("cpu", "2")},
			inits:      []corev1.Container{native(container("proxy", list("cpu", "100m"), nil)), container("migrate", list("cpu", "50m"), nil)},
			containers: []corev1.Container{container("app", list("cpu", "300m"), nil)},
			want:       &corev1.ResourceRequirements{Requests: list("cpu", "410m"), Limits: list("cpu", "2100m")},
		},
		{
			// An init container alone can need more than the app and the
			// native sidecars together.
			name:       "requests left to a large init container",
			pod:        corev1.ResourceRequirements{Limits: list("memory", "2Gi")},
			inits:      []corev1.Container{native(container("proxy", list("memory", "100Mi"), nil)), container("migrate", list("memory", "1Gi"), nil)},
			containers: []corev1.Container{container("app", list("memory", "200Mi"), nil)},
			want:       &corev1.ResourceRequirements{Requests: list("memory", "1148Mi"), Limits: list("memory", "2112Mi")},
		},
		{
			// One container without a CPU limit: the API server fills no
			// pod-level CPU limit in, and none is written.
			name:       "no limit filled in when a container has none",
			pod:        corev1.ResourceRequirements{Requests: list("cpu", "1")},
			containers: []corev1.Container{container("app", nil, list("cpu", "500m")), container("log", list("cpu", "10m"), nil)},
			want:       &corev1.ResourceRequirements{Requests: list("cpu", "1010m")},
		},
		{
			// Only huge pages at the pod level: CPU and memory are settled
			// from the containers all the same.
			name:       "huge pages only",
			pod:        corev1.ResourceRequirements{Limits: list("hugepages-2Mi", "100Mi")},
			containers: []corev1.Container{container("app", list("cpu", "1", "memory", "1Gi"), list("cpu", "1", "memory", "1Gi", "hugepages-2Mi", "100Mi"))},
			want: &corev1.ResourceRequirements{
				Requests: list("cpu", "1100m", "memory", "1088Mi"),
				Limits:   list("cpu", "1100m", "memory", "1088Mi", "hugepages-2Mi", "100Mi"),
			},
			qos: true,
		},
		{
			// Requests equal to limits that the containers fill in: the pod
			// is Guaranteed, and so is the sidecar's share.
			name:       "guaranteed through filled-in limits",
			pod:        corev1.ResourceRequirements{Requests: list("cpu", "1", "memory", "1Gi")},
			containers: []corev1.Container{container("app", nil, list("cpu", "1", "memory", "512Mi"))},
			want:       &corev1.ResourceRequirements{Requests: list("cpu", "1100m", "memory", "1088Mi"), Limits: list("cpu", "1100m", "memory", "1088Mi")},
			qos:        true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod(map[string]string{AnnotationElection: "web"})
			pod.Spec.Resources = &tt.pod
			pod.Spec.InitContainers = tt.inits
			pod.Spec.Containers = tt.containers
			if got := guaranteed(pod); got != tt.qos {
				t.Errorf("guaranteed(pod) = %v, want %v", got, tt.qos)
			}
			out, err := inject(pod, testSettings())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out.Spec.Resources, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })); diff != "" {
				t.Errorf("pod-level resources (-want +got):\n%s", diff)
			}
			if got := guaranteed(out); got != tt.qos {
				t.Errorf("guaranteed(injected pod) = %v, want %v", got, tt.qos)
			}
		})
	}
}
