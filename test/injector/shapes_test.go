package injector

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestPodLevelResources: pods that budget CPU and memory as a whole
// (spec.resources) are admitted by the API server once injected, with the
// sidecar's share added to the budget, in a namespace whose ResourceQuota
// counts limits, and keep their QoS class.
func TestPodLevelResources(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	limitsQuota(t, ns)
	ctx := ctxFor(t, 30*time.Second)

	tests := []struct {
		name string
		// pod and app are the pod-level and the app container's resources.
		pod, app corev1.ResourceRequirements
		// want is the pod-level budget after injection and defaulting.
		want corev1.ResourceRequirements
		qos  corev1.PodQOSClass
		// inits are init containers the pod declares before the app.
		inits []corev1.Container
	}{
		{
			// The app's requests fill the budget: without the sidecar's
			// share added, the API server refuses the pod (its containers
			// would request more than the pod).
			name: "full-budget",
			pod:  requirements("1", "1Gi", "2", "2Gi"),
			app:  requirements("1", "1Gi", "", ""),
			want: requirements("1010m", "1048Mi", "2100m", "2112Mi"),
			qos:  corev1.PodQOSBurstable,
		},
		{
			// Only limits: the API server makes the requests equal to them,
			// after the webhooks. Left to it, the requests would be the
			// sidecar's, and the pod Burstable.
			name: "limits-only",
			pod:  requirements("", "", "1", "1Gi"),
			want: requirements("1100m", "1088Mi", "1100m", "1088Mi"),
			qos:  corev1.PodQOSGuaranteed,
		},
		{
			// Only requests, and the containers' limits: the API server
			// fills the pod-level limits in from the containers' (with the
			// sidecar's, after the webhooks), and the pod is Guaranteed.
			name: "limits-from-containers",
			pod:  requirements("1", "1Gi", "", ""),
			app:  requirements("", "", "1", "512Mi"),
			want: requirements("1100m", "1088Mi", "1100m", "1088Mi"),
			qos:  corev1.PodQOSGuaranteed,
		},
		{
			// Requests left to the containers, among them a native sidecar
			// and an init container that needs more memory than the rest
			// together: the written requests must cover the API server's
			// aggregate, or it refuses the pod.
			name: "native-sidecars",
			pod:  requirements("", "", "2", "2Gi"),
			app:  requirements("300m", "200Mi", "", ""),
			inits: []corev1.Container{
				{Name: "proxy", Image: "registry.k8s.io/pause:3.10", RestartPolicy: new(corev1.ContainerRestartPolicyAlways), Resources: requirements("100m", "100Mi", "", "")},
				{Name: "migrate", Image: "registry.k8s.io/pause:3.10", Resources: requirements("50m", "1Gi", "", "")},
			},
			want: requirements("410m", "1148Mi", "2100m", "2112Mi"),
			qos:  corev1.PodQOSBurstable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := electorPod(tt.name, "app", map[string]string{webhook.AnnotationElection: "my-app"})
			p.Spec.Resources = &tt.pod
			p.Spec.InitContainers = tt.inits
			p.Spec.Containers[0].Resources = tt.app
			pod, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("the injected pod was refused: %v", err)
			}
			c := webhook.ElectorContainer(pod)
			if c == nil {
				t.Fatal("the pod was not injected")
			}
			if diff := cmp.Diff(&tt.want, pod.Spec.Resources, equalQuantities); diff != "" {
				t.Errorf("pod-level resources (-want +got):\n%s", diff)
			}
			if pod.Status.QOSClass != tt.qos {
				t.Errorf("QoS class %s, want %s", pod.Status.QOSClass, tt.qos)
			}
			// The sidecar keeps its own requests and limits within the pod's.
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("sidecar resources = %v, want its own requests and limits", c.Resources)
			}
		})
	}
}

// TestPodShapes: for each pod shape, the injected pod is admitted and is
// what it should be, or the webhook refuses it with the field and the fix;
// never a pod that the API server refuses for the sidecar's sake, or one
// that would fail on the node.
func TestPodShapes(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	annotations := func(kv ...string) map[string]string {
		m := map[string]string{webhook.AnnotationElection: "my-app"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	tests := []struct {
		name        string
		annotations map[string]string
		modify      func(*corev1.Pod)
		// denied is part of the webhook's denial; empty when the pod must
		// be admitted, and then check, if set, looks at it.
		denied string
		check  func(t *testing.T, pod *corev1.Pod)
	}{
		{
			name:        "job",
			annotations: annotations(),
			modify:      func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever },
			check: func(t *testing.T, pod *corev1.Pod) {
				c := webhook.ElectorContainer(pod)
				if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways || len(pod.Spec.InitContainers) != 1 {
					t.Errorf("the sidecar of a pod that runs to completion is not a native sidecar: restartPolicy %v, %d init containers", c.RestartPolicy, len(pod.Spec.InitContainers))
				}
			},
		},
		{
			name:        "job-plain-sidecar",
			annotations: annotations(webhook.AnnotationNativeSidecar, "false"),
			modify:      func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure },
			denied:      `spec.restartPolicy: OnFailure: the pod runs to completion, but a plain elector container never exits`,
		},
		{
			name:        "windows",
			annotations: annotations(),
			modify:      func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} },
			denied:      `spec.os.name: the elector sidecar runs on Linux only`,
		},
		{
			name:        "root",
			annotations: annotations(),
			modify: func(p *corev1.Pod) {
				p.Spec.SecurityContext.RunAsNonRoot = nil
				p.Spec.SecurityContext.RunAsUser = new(int64(0))
			},
			denied: `spec.securityContext.runAsUser: 0 runs every container as root`,
		},
		{
			name:        "host-network",
			annotations: annotations(),
			modify:      func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			denied:      `spec.hostNetwork: the elector sidecar is not injected into pods on the node's network`,
		},
		{
			name:        "container-named-elector",
			annotations: annotations(),
			modify: func(p *corev1.Pod) {
				c := p.Spec.Containers[0]
				c.Name = webhook.ContainerName
				p.Spec.Containers = append(p.Spec.Containers, c)
			},
			denied: `container "elector": the name is reserved for the elector sidecar`,
		},
		{
			name:        "volume-named-like-the-sidecars",
			annotations: annotations(),
			modify: func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: webhook.APIAccessVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			},
			denied: `volume "elector-api-access": the name is reserved`,
		},
		{
			// The app gets no token; the elector gets its own.
			name:        "no-automount",
			annotations: annotations(),
			modify:      func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = new(false) },
			check: func(t *testing.T, pod *corev1.Pod) {
				for _, m := range pod.Spec.Containers[0].VolumeMounts {
					if m.MountPath == webhook.APIAccessMountPath {
						t.Errorf("the app container got a token at %s: %+v", m.MountPath, m)
					}
				}
				mounted := false
				for _, m := range webhook.ElectorContainer(pod).VolumeMounts {
					mounted = mounted || (m.Name == webhook.APIAccessVolumeName && m.MountPath == webhook.APIAccessMountPath)
				}
				hasToken := false
				for _, v := range pod.Spec.Volumes {
					if v.Name == webhook.APIAccessVolumeName && v.Projected != nil {
						for _, s := range v.Projected.Sources {
							hasToken = hasToken || s.ServiceAccountToken != nil
						}
					}
				}
				if !mounted || !hasToken {
					t.Errorf("the sidecar has no token of its own (mounted %v, projected token %v)", mounted, hasToken)
				}
			},
		},
		{
			// The app hardens itself and the pod runs as a chosen user with
			// a Localhost seccomp profile: the sidecar keeps its own
			// securityContext and runs as the pod's user.
			name:        "hardened-app",
			annotations: annotations(),
			modify: func(p *corev1.Pod) {
				p.Spec.SecurityContext.RunAsUser = new(int64(1000))
				p.Spec.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: new("profiles/app.json")}
				p.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem = new(true)
			},
			check: func(t *testing.T, pod *corev1.Pod) {
				sc := webhook.ElectorContainer(pod).SecurityContext
				if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
					sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsUser != nil {
					t.Errorf("sidecar securityContext = %+v, want its own (RuntimeDefault seccomp, read-only root, the pod's user)", sc)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := electorPod(tt.name, "app", tt.annotations)
			tt.modify(p)
			pod, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			if tt.denied != "" {
				if err == nil {
					t.Fatalf("the pod was admitted, with containers %d and init containers %d", len(pod.Spec.Containers), len(pod.Spec.InitContainers))
				}
				if msg := err.Error(); !strings.Contains(msg, `admission webhook "inject.elector.vapor.io" denied the request`) || !strings.Contains(msg, tt.denied) {
					t.Fatalf("error = %q, want the webhook's denial containing %q", msg, tt.denied)
				}
				return
			}
			if err != nil {
				t.Fatalf("the injected pod was refused: %v", err)
			}
			if webhook.ElectorContainer(pod) == nil {
				t.Fatal("the pod was not injected")
			}
			if tt.check != nil {
				tt.check(t, pod)
			}
		})
	}
}

// TestLimitRangeBelowTheSidecar: a LimitRange whose container maximum is
// below the sidecar's default limits makes the API server refuse the
// injected pod when it is created (LimitRange defaults are applied before
// the webhook, so the sidecar is checked as injected); never a pod that
// fails later. The sidecar's resource annotations fit it in.
func TestLimitRangeBelowTheSidecar(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	lr := &corev1.LimitRange{
		ObjectMeta: metav1.ObjectMeta{Name: "small"},
		Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
			Type: corev1.LimitTypeContainer,
			Max:  corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		}}},
	}
	if _, err := env.Client.CoreV1().LimitRanges(ns).Create(ctx, lr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The LimitRanger admission plugin may take a moment to see the new
	// LimitRange; a dry run goes through the same admission.
	want := "maximum memory usage per Container is 32Mi, but limit is 64Mi"
	eventually(t, 20*time.Second, func() error {
		_, err := env.Client.CoreV1().Pods(ns).Create(ctx,
			electorPod("defaults", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), want) {
			return fmt.Errorf("a sidecar above the LimitRange: err = %v, want the API server's refusal at creation, %q", err, want)
		}
		return nil
	})
	pod, err := env.Client.CoreV1().Pods(ns).Create(ctx, electorPod("fitted", "app", map[string]string{
		webhook.AnnotationElection:    "my-app",
		webhook.AnnotationCPULimit:    "50m",
		webhook.AnnotationMemory:      "16Mi",
		webhook.AnnotationMemoryLimit: "32Mi",
	}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a sidecar fitted to the LimitRange by its annotations was refused: %v", err)
	}
	if webhook.ElectorContainer(pod) == nil {
		t.Error("the pod was not injected")
	}
}

// limitsQuota gives ns a ResourceQuota on CPU and memory limits, with the
// status the resourcecontroller would write (the quota admission plugin
// refuses pods until there is one).
func limitsQuota(t *testing.T, ns string) {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "limits"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{
			corev1.ResourceLimitsCPU:    resource.MustParse("8"),
			corev1.ResourceLimitsMemory: resource.MustParse("8Gi"),
		}},
	}
	quota, err := env.Client.CoreV1().ResourceQuotas(ns).Create(ctx, quota, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{
		corev1.ResourceLimitsCPU:    resource.MustParse("0"),
		corev1.ResourceLimitsMemory: resource.MustParse("0"),
	}}
	if _, err := env.Client.CoreV1().ResourceQuotas(ns).UpdateStatus(ctx, quota, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// requirements builds CPU and memory requests and limits; an empty value
// is left out.
func requirements(cpu, memory, cpuLimit, memoryLimit string) corev1.ResourceRequirements {
	list := func(cpu, memory string) corev1.ResourceList {
		l := corev1.ResourceList{}
		if cpu != "" {
			l[corev1.ResourceCPU] = resource.MustParse(cpu)
		}
		if memory != "" {
			l[corev1.ResourceMemory] = resource.MustParse(memory)
		}
		if len(l) == 0 {
			return nil
		}
		return l
	}
	return corev1.ResourceRequirements{Requests: list(cpu, memory), Limits: list(cpuLimit, memoryLimit)}
}

var equalQuantities = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })
