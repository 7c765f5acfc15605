package webhook

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.injected.yaml from inject's output")

// testSettings are the settings every test injects with.
func testSettings() Settings {
	s := DefaultSettings()
	s.ElectorImage = "ghcr.io/vapor-ware/k8s-elector:test"
	s.InjectorVersion = "v0.0.0-test"
	s.NativeSidecars = true
	return s
}

// TestInjectGolden injects each testdata/NAME.yaml and compares the result
// with testdata/NAME.injected.yaml. Run `go test ./pkg/webhook -update` to
// rewrite the expected files, then review their diff.
func TestInjectGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Pods that inject must return as they came.
	unchanged := map[string]bool{"already-injected": true, "no-annotation": true}
	ran := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".injected.yaml") {
			continue
		}
		ran++
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			pod := readPod(t, in)
			before := pod.DeepCopy()

			got, err := inject(pod, testSettings())
			if err != nil {
				t.Fatalf("inject: %v", err)
			}
			if diff := cmp.Diff(before, pod); diff != "" {
				t.Errorf("inject modified its input (-before +after):\n%s", diff)
			}
			if unchanged[name] {
				if diff := cmp.Diff(pod, got); diff != "" {
					t.Errorf("inject changed a pod it should leave alone (-in +out):\n%s", diff)
				}
			}
			// The API server may call the webhook again on its own output.
			again, err := inject(got, testSettings())
			if err != nil {
				t.Fatalf("inject on its own output: %v", err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("inject is not idempotent (-first +second):\n%s", diff)
			}

			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".injected.yaml"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/webhook -update to create it)", err)
			}
			// Line by line, so that the diff reads like the file's.
			if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(out), "\n")); diff != "" {
				t.Errorf("inject(%s) differs from %s (-want +got):\n%s\nIf the change is intended, run go test ./pkg/webhook -update and review the diff.", in, golden, diff)
			}
		})
	}
	if ran == 0 {
		t.Fatal("no testdata/*.yaml inputs found")
	}
}

// allPorts declares every TCP port, 1 to 65535.
func allPorts() []corev1.ContainerPort {
	ports := make([]corev1.ContainerPort, 0, 65535)
	for p := int32(1); p <= 65535; p++ {
		ports = append(ports, corev1.ContainerPort{ContainerPort: p})
	}
	return ports
}

func readPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	// Strict, so that a typo in a test input fails instead of being dropped.
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pod
}

// appPod is a pod with one app container on port 8080 and the given
// annotations.
func appPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: "default", Annotations: annotations},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "web",
				Image: "nginx:1.27",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
	}
}

// sidecarImage returns the image of the pod's elector container, or "".
func sidecarImage(pod *corev1.Pod) string {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == ContainerName {
			return c.Image
		}
	}
	return ""
}

// TestInjectMarksVersionAndImage: an injected pod says which injector
// injected it and with which image, whatever the pod said itself, so that
// a pod cannot pass for one injected by the running injector.
func TestInjectMarksVersionAndImage(t *testing.T) {
	s := testSettings()
	tests := []struct {
		name        string
		annotations map[string]string
		wantImage   string // "" for a pod left alone
	}{
		{
			name:        "the injector's image",
			annotations: map[string]string{AnnotationElection: "web"},
			wantImage:   s.ElectorImage,
		},
		{
			name:        "the pod's own image",
			annotations: map[string]string{AnnotationElection: "web", AnnotationImage: "example.com/elector:v2"},
			wantImage:   "example.com/elector:v2",
		},
		{
			name: "marks set by the pod are overwritten",
			annotations: map[string]string{
				AnnotationElection:        "web",
				AnnotationInjectorVersion: "v99.0.0",
				AnnotationInjectedImage:   "example.com/elector:v99",
			},
			wantImage: s.ElectorImage,
		},
		{
			// Copied from an injected pod's manifest: they ask for nothing.
			name: "marks alone",
			annotations: map[string]string{
				AnnotationStatus:          StatusInjected,
				AnnotationInjectorVersion: "v99.0.0",
				AnnotationInjectedImage:   "example.com/elector:v99",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod(tt.annotations)
			out, err := inject(pod, s)
			if err != nil {
				t.Fatalf("inject: %v", err)
			}
			if tt.wantImage == "" {
				if diff := cmp.Diff(pod, out); diff != "" {
					t.Errorf("inject changed a pod that asks for nothing (-in +out):\n%s", diff)
				}
				return
			}
			want := map[string]string{AnnotationInjectorVersion: s.InjectorVersion, AnnotationInjectedImage: tt.wantImage}
			got := map[string]string{AnnotationInjectorVersion: out.Annotations[AnnotationInjectorVersion], AnnotationInjectedImage: out.Annotations[AnnotationInjectedImage]}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("marks of the injected pod (-want +got):\n%s", diff)
			}
			if img := sidecarImage(out); img != tt.wantImage {
				t.Errorf("the sidecar runs %q, want %q", img, tt.wantImage)
			}
		})
	}
}

func TestInjectErrors(t *testing.T) {
	// withElection returns the annotations of a valid election plus kv.
	withElection := func(kv ...string) map[string]string {
		m := map[string]string{AnnotationElection: "web"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	known := "(known: elector.vapor.io/election, elector.vapor.io/port, elector.vapor.io/ttl, elector.vapor.io/lock-type, elector.vapor.io/image, elector.vapor.io/cpu, elector.vapor.io/memory, elector.vapor.io/cpu-limit, elector.vapor.io/memory-limit, elector.vapor.io/native-sidecar, elector.vapor.io/pod-label, elector.vapor.io/pod-deletion-cost, elector.vapor.io/prefer-newest, elector.vapor.io/return-wait, elector.vapor.io/app-health-url, elector.vapor.io/app-health-period, elector.vapor.io/app-health-threshold, elector.vapor.io/notify-url, elector.vapor.io/leader-service, elector.vapor.io/status, elector.vapor.io/injector-version, elector.vapor.io/injected-image)"

	tests := []struct {
		name        string
		annotations map[string]string
		modify      func(*corev1.Pod)
		settings    func(*Settings)
		want        string
	}{
		{
			name:        "bad election name",
			annotations: withElection(AnnotationElection, "My_App"),
			want:        `annotation elector.vapor.io/election: "My_App" is not a valid Kubernetes object name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*') (example: my-app)`,
		},
		{
			name:        "election missing while other annotations are set",
			annotations: map[string]string{AnnotationTTL: "10s"},
			want:        `annotation elector.vapor.io/election: is required (example: my-app)`,
		},
		{
			name:        "ttl not a duration",
			annotations: withElection(AnnotationTTL, "5x"),
			want:        `annotation elector.vapor.io/ttl: "5x" is not a duration (example: 10s)`,
		},
		{
			name:        "ttl too short",
			annotations: withElection(AnnotationTTL, "500ms"),
			want:        `annotation elector.vapor.io/ttl: 500ms is under the minimum 2s (example: 10s)`,
		},
		{
			name:        "ttl not whole seconds",
			annotations: withElection(AnnotationTTL, "2500ms"),
			want:        `annotation elector.vapor.io/ttl: 2.5s is not a whole number of seconds, which is how the lease stores it (example: 10s)`,
		},
		{
			name:        "port not a number",
			annotations: withElection(AnnotationPort, "http"),
			want:        `annotation elector.vapor.io/port: "http" is not a port number (example: 4040)`,
		},
		{
			name:        "port 0",
			annotations: withElection(AnnotationPort, "0"),
			want:        `annotation elector.vapor.io/port: "0" is not a port number in 1-65535 (example: 4040)`,
		},
		{
			name:        "port 70000",
			annotations: withElection(AnnotationPort, "70000"),
			want:        `annotation elector.vapor.io/port: "70000" is not a port number in 1-65535 (example: 4040)`,
		},
		{
			name:        "port used by the app container",
			annotations: withElection(AnnotationPort, "8080"),
			want:        `annotation elector.vapor.io/port: port 8080 is already used by container "web"; choose a free port (example: 8081)`,
		},
		{
			name:        "default port used by an init container",
			annotations: withElection(),
			modify: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "proxy", Image: "envoy", Ports: []corev1.ContainerPort{{ContainerPort: 4040}, {ContainerPort: 4041}}}}
			},
			want: `the elector's default port 4040 is already used by container "proxy"; set annotation elector.vapor.io/port to a free port (example: 4042)`,
		},
		{
			name:        "port suggestion wraps round",
			annotations: withElection(AnnotationPort, "65535"),
			modify: func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 65535}, {ContainerPort: 1}, {ContainerPort: 2, Protocol: corev1.ProtocolUDP}}
			},
			want: `annotation elector.vapor.io/port: port 65535 is already used by container "web"; choose a free port (example: 2)`,
		},
		{
			// Every TCP port: the search for a free one must end.
			name:        "every port declared",
			annotations: withElection(),
			modify: func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = allPorts()
			},
			want: `the elector's default port 4040 is already used by container "web"; set annotation elector.vapor.io/port to a free port; but every TCP port is declared by the pod's containers, so declare fewer`,
		},
		{
			name:        "host network",
			annotations: withElection(),
			modify:      func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			want:        `spec.hostNetwork: the elector sidecar is not injected into pods on the node's network, where its port would be taken on the node itself (a second replica on the node could not start) and its API open to the node's network; run the pod without hostNetwork, or remove the elector.vapor.io/ annotations`,
		},
		{
			name:        "pod-label the pod already carries",
			annotations: withElection(AnnotationPodLabel, "pod-template-hash"),
			modify: func(p *corev1.Pod) {
				p.Labels = map[string]string{"app": "web", "pod-template-hash": "7c9d8f6b5"}
			},
			want: `annotation elector.vapor.io/pod-label: the pod already has the label "pod-template-hash", which the elector would overwrite with leader or standby (taking the pod out of any selector that uses it, such as its ReplicaSet's); choose a key the pod does not carry (example: example.com/role)`,
		},
		{
			name:        "lock type the injector does not allow",
			annotations: withElection(AnnotationLockType, "endpoints"),
			want:        `annotation elector.vapor.io/lock-type: "endpoints" is not allowed by this injector (allowed: leases,configmaps); use one of those, or ask the cluster admin to add it to the injector's -allowed-lock-types flag`,
		},
		{
			name:        "cpu limit below the default request",
			annotations: withElection(AnnotationCPULimit, "5m"),
			want:        `annotation elector.vapor.io/cpu-limit: 5m is below the request 10m (annotation elector.vapor.io/cpu, or the injector's default); raise the limit, lower the request, or set the limit to 0 for none`,
		},
		{
			name:        "memory limit below the memory annotation",
			annotations: withElection(AnnotationMemory, "100Mi", AnnotationMemoryLimit, "64Mi"),
			want:        `annotation elector.vapor.io/memory-limit: 64Mi is below the request 100Mi (annotation elector.vapor.io/memory, or the injector's default); raise the limit, lower the request, or set the limit to 0 for none`,
		},
		{
			name:        "many unknown keys are summed up",
			annotations: withElection("elector.vapor.io/a", "", "elector.vapor.io/b", "", "elector.vapor.io/c", "", "elector.vapor.io/d", "", "elector.vapor.io/e", "", "elector.vapor.io/f", "", "elector.vapor.io/g", ""),
			want: strings.Join([]string{
				`annotation elector.vapor.io/a is not a known annotation ` + known,
				`annotation elector.vapor.io/b is not a known annotation ` + known,
				`annotation elector.vapor.io/c is not a known annotation ` + known,
				`annotation elector.vapor.io/d is not a known annotation ` + known,
				`annotation elector.vapor.io/e is not a known annotation ` + known,
				`and 2 more unknown annotations under elector.vapor.io/`,
			}, "\n"),
		},
		{
			name:        "bad lock type",
			annotations: withElection(AnnotationLockType, "etcd"),
			want:        `annotation elector.vapor.io/lock-type: "etcd" is not a lock type (valid: leases, configmaps, endpoints)`,
		},
		{
			name:        "bad image",
			annotations: withElection(AnnotationImage, "my image"),
			want:        `annotation elector.vapor.io/image: "my image" must be a non-empty image reference without whitespace (example: ghcr.io/vapor-ware/k8s-elector:v1.0.0)`,
		},
		{
			name:        "bad cpu",
			annotations: withElection(AnnotationCPU, "lots"),
			want:        `annotation elector.vapor.io/cpu: "lots" is not a resource quantity (example: 10m)`,
		},
		{
			name:        "negative memory",
			annotations: withElection(AnnotationMemory, "-1Mi"),
			want:        `annotation elector.vapor.io/memory: "-1Mi" must not be negative (example: 32Mi)`,
		},
		{
			name:        "bad native-sidecar",
			annotations: withElection(AnnotationNativeSidecar, "yes"),
			want:        `annotation elector.vapor.io/native-sidecar: "yes" must be true or false (example: false)`,
		},
		{
			name:        "bad prefer-newest",
			annotations: withElection(AnnotationPreferNewest, "no"),
			want:        `annotation elector.vapor.io/prefer-newest: "no" must be true or false (example: false)`,
		},
		{
			name:        "bad notify-url",
			annotations: withElection(AnnotationNotifyURL, "localhost:8080/elector"),
			want:        `annotation elector.vapor.io/notify-url: "localhost:8080/elector" is not an http or https URL (example: http://localhost:8080/elector)`,
		},
		{
			name:        "notify-url without a host",
			annotations: withElection(AnnotationNotifyURL, "http:///elector"),
			want:        `annotation elector.vapor.io/notify-url: "http:///elector" names no host (example: http://localhost:8080/elector)`,
		},
		{
			name:        "leader-service not a Service name",
			annotations: withElection(AnnotationLeaderService, "Web.Leader"),
			want:        `annotation elector.vapor.io/leader-service: "Web.Leader" is not a Service name: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?'); name the Service whose endpoints the leader keeps (example: my-app-leader)`,
		},
		{
			name:        "bad app-health-url",
			annotations: withElection(AnnotationAppHealthURL, "localhost:8080/healthz"),
			want:        `annotation elector.vapor.io/app-health-url: "localhost:8080/healthz" is not an http or https URL (example: http://localhost:8080/healthz)`,
		},
		{
			name:        "app-health-period too short",
			annotations: withElection(AnnotationAppHealthURL, "http://localhost:8080/", AnnotationAppHealthPeriod, "10ms"),
			want:        `annotation elector.vapor.io/app-health-period: "10ms" is under the minimum 100ms (example: 1s)`,
		},
		{
			name:        "app-health-threshold of 0",
			annotations: withElection(AnnotationAppHealthURL, "http://localhost:8080/", AnnotationAppHealthThreshold, "0"),
			want:        `annotation elector.vapor.io/app-health-threshold: "0" is not a whole number in 1-100 (example: 3)`,
		},
		{
			name:        "app-health-period without a URL",
			annotations: withElection(AnnotationAppHealthPeriod, "2s"),
			want:        `annotation elector.vapor.io/app-health-period: has no effect without elector.vapor.io/app-health-url; set it (example: http://localhost:8080/healthz), or remove elector.vapor.io/app-health-period`,
		},
		{
			name:        "bad pod-label key",
			annotations: withElection(AnnotationPodLabel, "role!"),
			want:        `annotation elector.vapor.io/pod-label: "role!" is not a valid label key: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') (example: example.com/role)`,
		},
		{
			name:        "pod-label is the injector's label",
			annotations: withElection(AnnotationPodLabel, LabelInjected),
			want:        `annotation elector.vapor.io/pod-label: "elector.vapor.io/injected" is the injector's own label; choose another key (example: example.com/role)`,
		},
		{
			name:        "unknown annotation key",
			annotations: withElection("elector.vapor.io/tll", "10s"),
			want:        `annotation elector.vapor.io/tll is not a known annotation ` + known,
		},
		{
			name:        "misspelt election key",
			annotations: map[string]string{"elector.vapor.io/electon": "web"},
			want:        "annotation elector.vapor.io/election: is required (example: my-app)\nannotation elector.vapor.io/electon is not a known annotation " + known,
		},
		{
			name:        "container named elector",
			annotations: withElection(),
			modify: func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ContainerName, Image: "example.com/mine"})
			},
			want: `container "elector": the name is reserved for the elector sidecar; rename the container, or remove the elector.vapor.io/ annotations`,
		},
		{
			name: "init container named elector with a status copied from elsewhere",
			// Status without our sidecar is not a sign of a past injection.
			annotations: withElection(AnnotationStatus, "something-else"),
			modify: func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: ContainerName, Image: "example.com/mine"}}
			},
			want: `container "elector": the name is reserved for the elector sidecar; rename the container, or remove the elector.vapor.io/ annotations`,
		},
		{
			name:        "volume name conflict",
			annotations: withElection(),
			modify: func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{{Name: APIAccessVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			},
			want: `volume "elector-api-access": the name is reserved for the elector sidecar's API credentials; rename the volume`,
		},
		{
			name:        "every problem at once",
			annotations: withElection(AnnotationTTL, "5x", AnnotationPort, "http", AnnotationCPU, "lots", "elector.vapor.io/bogus", "1"),
			modify: func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ContainerName, Image: "example.com/mine"})
			},
			want: strings.Join([]string{
				`annotation elector.vapor.io/port: "http" is not a port number (example: 4040)`,
				`annotation elector.vapor.io/ttl: "5x" is not a duration (example: 10s)`,
				`annotation elector.vapor.io/cpu: "lots" is not a resource quantity (example: 10m)`,
				`annotation elector.vapor.io/bogus is not a known annotation ` + known,
				`container "elector": the name is reserved for the elector sidecar; rename the container, or remove the elector.vapor.io/ annotations`,
			}, "\n"),
		},
		{
			name:        "port in use reported with the other errors",
			annotations: withElection(AnnotationPort, "8080", AnnotationTTL, "5x"),
			want: `annotation elector.vapor.io/ttl: "5x" is not a duration (example: 10s)` + "\n" +
				`annotation elector.vapor.io/port: port 8080 is already used by container "web"; choose a free port (example: 8081)`,
		},
		{
			name:        "windows pod",
			annotations: withElection(),
			modify:      func(p *corev1.Pod) { p.Spec.OS = &corev1.PodOS{Name: corev1.Windows} },
			want:        `spec.os.name: the elector sidecar runs on Linux only and is not injected into a windows pod; elect from a Linux pod, or remove the elector.vapor.io/ annotations`,
		},
		{
			name:        "pod runs as root",
			annotations: withElection(),
			modify: func(p *corev1.Pod) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64(0))}
			},
			want: `spec.securityContext.runAsUser: 0 runs every container as root, and the elector sidecar runs as non-root (runAsNonRoot), so the kubelet would not start it; set runAsUser: 0 on the containers that need root instead of on the pod, or remove the elector.vapor.io/ annotations`,
		},
		{
			name:        "plain sidecar in a pod that runs to completion",
			annotations: withElection(AnnotationNativeSidecar, "false"),
			modify:      func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever },
			want:        `spec.restartPolicy: Never: the pod runs to completion, but a plain elector container never exits, so the pod would never complete; set annotation elector.vapor.io/native-sidecar to "true", or remove it (a native sidecar stops once the app's containers have exited)`,
		},
		{
			name:        "pod that runs to completion on an API server without native sidecars",
			annotations: withElection(),
			modify:      func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure },
			settings:    func(s *Settings) { s.NativeSidecars = false },
			want:        `spec.restartPolicy: OnFailure: the pod runs to completion, but the elector never exits and this API server has no native sidecars (Kubernetes 1.29 and later), which stop with the app; the pod would never complete; run the pod with restartPolicy Always, or remove the elector.vapor.io/ annotations`,
		},
		{
			name:        "pod deletion cost over the pod's own",
			annotations: withElection(AnnotationPodDeletionCost, "true"),
			modify:      func(p *corev1.Pod) { p.Annotations["controller.kubernetes.io/pod-deletion-cost"] = "-10" },
			want:        `annotation elector.vapor.io/pod-deletion-cost: the pod already has the annotation controller.kubernetes.io/pod-deletion-cost, which the elector would overwrite on the leader's pod and remove on the others; remove one of the two`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := appPod(tt.annotations)
			if tt.modify != nil {
				tt.modify(pod)
			}
			s := testSettings()
			if tt.settings != nil {
				tt.settings(&s)
			}
			got, err := inject(pod, s)
			if err == nil {
				t.Fatalf("inject succeeded, want error %q; pod:\n%v", tt.want, got)
			}
			if got != nil {
				t.Errorf("inject returned a pod with its error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// A fuzzed call must use at most fuzzCPU of CPU time. inject and Handle
// take well under a millisecond on a usual pod and tens of milliseconds on
// a 3 MB one; the bound is generous, to catch costs that grow much faster
// than the pod, not to measure speed. It is CPU time, not wall time, so
// that a loaded machine (or the fuzzer's instrumentation sharing it) does
// not fail it; a call that never returns fails after fuzzHang.
const (
	fuzzCPU  = time.Second
	fuzzHang = 30 * time.Second
)

// within runs f, and fails if the thread that ran it used more than
// fuzzCPU of CPU time, or if it has not returned after fuzzHang. The
// thread's, not the process's: the garbage collector's workers and the race
// detector run on other threads, and under make test's load they alone once
// took a seed past the bound.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		start := threadCPU()
		f()
		done <- threadCPU() - start
	}()
	select {
	case used := <-done:
		if used > fuzzCPU {
			t.Fatalf("%s used %s of CPU, more than %s", what, used, fuzzCPU)
		}
	case <-time.After(fuzzHang):
		t.Fatalf("%s did not return within %s", what, fuzzHang)
	}
}

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rusageThread is Linux's RUSAGE_THREAD, which package syscall does not
// name.
const rusageThread = 1

// addPodSeeds adds every golden input, as JSON, to f's corpus, and
// basic.yaml with every TCP port (a pod of about 3 MB, the one that once
// made inject loop forever). That one is left out under -fuzz, where the
// fuzzer would spend most of its time on copies of it; go test runs it.
func addPodSeeds(f *testing.F) {
	fuzzing := flag.Lookup("test.fuzz").Value.String() != ""
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		if strings.HasSuffix(in, ".injected.yaml") {
			continue
		}
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		raw, err := yaml.YAMLToJSON(data)
		if err != nil {
			f.Fatalf("%s: %v", in, err)
		}
		f.Add(raw, uint16(0))
		if filepath.Base(in) == "basic.yaml" && !fuzzing {
			f.Add(raw, uint16(65535))
		}
	}
}

// fuzzPod decodes a fuzzed pod as the handler does, and gives its first
// container the TCP ports 1 to ports: a large pod the fuzzer would take
// long to grow itself. ok is false for input that is not a pod.
func fuzzPod(raw []byte, ports uint16) (pod *corev1.Pod, ok bool) {
	pod = &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, pod); err != nil {
		return nil, false
	}
	// Most inputs stay small, so that the fuzzer runs many; every port,
	// the largest pod, stays in reach.
	if ports > 1024 && ports != 65535 {
		ports %= 1024
	}
	if ports > 0 {
		if len(pod.Spec.Containers) == 0 {
			pod.Spec.Containers = []corev1.Container{{Name: "app", Image: "nginx:1.27"}}
		}
		for p := int32(1); p <= int32(ports); p++ {
			pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: p})
		}
	}
	return pod, true
}

// FuzzInject: inject never panics, returns promptly, leaves its input
// alone, gives a pod one sidecar or an error (never both), and returns the
// pod it injected unchanged.
//
//	go test -run '^$' -fuzz FuzzInject -fuzztime 5m -fuzzminimizetime 5s ./pkg/webhook/ (or make fuzz)
func FuzzInject(f *testing.F) {
	addPodSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte, ports uint16) {
		pod, ok := fuzzPod(raw, ports)
		if !ok {
			return
		}
		before := pod.DeepCopy()
		var out *corev1.Pod
		var err error
		within(t, "inject", func() { out, err = inject(pod, testSettings()) })
		if !equality.Semantic.DeepEqual(before, pod) {
			t.Fatal("inject modified its input")
		}
		if err != nil {
			if out != nil {
				t.Fatalf("inject returned a pod with its error %q", err)
			}
			if err.Error() == "" {
				t.Fatal("inject returned an empty error")
			}
			return
		}
		if !wantsInjection(pod.Annotations) || alreadyInjected(pod) {
			if !equality.Semantic.DeepEqual(pod, out) {
				t.Fatal("inject changed a pod it has nothing to inject into")
			}
			return
		}
		n := 0
		for _, c := range slices.Concat(out.Spec.InitContainers, out.Spec.Containers) {
			if c.Name == ContainerName {
				n++
			}
		}
		if n != 1 || !alreadyInjected(out) {
			t.Fatalf("inject gave the pod %d %s containers and status %q, want one and %q", n, ContainerName, out.Annotations[AnnotationStatus], StatusInjected)
		}
		if v := out.Annotations[AnnotationInjectorVersion]; v != testSettings().InjectorVersion {
			t.Fatalf("inject wrote %s %q, want the injector's %q", AnnotationInjectorVersion, v, testSettings().InjectorVersion)
		}
		if img := out.Annotations[AnnotationInjectedImage]; img != sidecarImage(out) {
			t.Fatalf("inject wrote %s %q, but the sidecar runs %q", AnnotationInjectedImage, img, sidecarImage(out))
		}
		if hasPodLevelResources(pod) && budgetFits(pod) == nil {
			if err := budgetFits(out); err != nil {
				t.Fatalf("the pod's containers fitted its pod-level budget, the injected pod's do not: %v", err)
			}
			if guaranteed(pod) != guaranteed(out) {
				t.Fatalf("inject changed the pod's QoS class: Guaranteed %v, then %v", guaranteed(pod), guaranteed(out))
			}
		}
		var again *corev1.Pod
		within(t, "inject of an injected pod", func() { again, err = inject(out, testSettings()) })
		if err != nil {
			t.Fatalf("inject of its own output: %v", err)
		}
		if !equality.Semantic.DeepEqual(out, again) {
			t.Fatal("inject is not idempotent: it changed the pod it injected")
		}
	})
}

// budgetFits applies the API server's checks of a pod-level budget
// (validatePodResourceConsistency, and requests within limits) to the
// budget the API server settles on: the containers' aggregate request
// within the pod's request, and each app container's limit within the
// pod's limit.
func budgetFits(pod *corev1.Pod) error {
	for _, r := range podLevelResources {
		b := settledBudget(pod, r)
		if b.hasRequest && b.hasLimit && b.request.Cmp(b.limit) > 0 {
			return fmt.Errorf("%s: pod request %s above pod limit %s", r, b.request.String(), b.limit.String())
		}
		if agg, ok := aggregate(pod, containerRequest, r); ok && b.hasRequest && agg.Cmp(b.request) > 0 {
			return fmt.Errorf("%s: containers request %s, above the pod's %s", r, agg.String(), b.request.String())
		}
		for i := range pod.Spec.Containers {
			if l, ok := containerLimit(&pod.Spec.Containers[i], r); ok && b.hasLimit && l.Cmp(b.limit) > 0 {
				return fmt.Errorf("%s: container %q limit %s, above the pod's %s", r, pod.Spec.Containers[i].Name, l.String(), b.limit.String())
			}
		}
	}
	return nil
}
