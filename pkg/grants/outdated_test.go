package grants

import (
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

const (
	testVersion = "v1.2.0"
	testImage   = "ghcr.io/vapor-ware/k8s-elector:v1.2.0"
)

// injectedPod is a pod as the injector leaves it, at version with image,
// running, with the annotations kv on top (an empty value deletes one).
func injectedPod(ns, name, version, image string, kv ...string) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels: map[string]string{webhook.LabelInjected: "true"},
			Annotations: map[string]string{
				webhook.AnnotationElection:        "x",
				webhook.AnnotationStatus:          webhook.StatusInjected,
				webhook.AnnotationInjectorVersion: version,
				webhook.AnnotationInjectedImage:   image,
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(p.Annotations, kv[i])
			continue
		}
		p.Annotations[kv[i]] = kv[i+1]
	}
	return p
}

func TestOutdated(t *testing.T) {
	tests := []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"this version and image", injectedPod("a", "p", testVersion, testImage), false},
		{"an older version", injectedPod("a", "p", "v1.1.0", testImage), true},
		{"a newer version", injectedPod("a", "p", "v1.3.0", testImage), true},
		{"before the version annotation", injectedPod("a", "p", "", "", webhook.AnnotationInjectorVersion, "", webhook.AnnotationInjectedImage, ""), true},
		{"another -elector-image", injectedPod("a", "p", testVersion, "ghcr.io/vapor-ware/k8s-elector:v1.1.0"), true},
		{"no image annotation", injectedPod("a", "p", testVersion, "", webhook.AnnotationInjectedImage, ""), true},
		{"its own image, as asked", injectedPod("a", "p", testVersion, "example.com/elector:v2", webhook.AnnotationImage, "example.com/elector:v2"), false},
		{"its own image, changed since", injectedPod("a", "p", testVersion, "example.com/elector:v2", webhook.AnnotationImage, "example.com/elector:v3"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := outdated(&tt.pod, testVersion, testImage); got != tt.want {
				t.Errorf("outdated = %v, want %v (annotations %v)", got, tt.want, tt.pod.Annotations)
			}
		})
	}
}

// TestCountOutdated: by namespace, the outdated pods among those not
// finished and not being deleted, and 0 for a namespace whose counted pods
// are all up to date.
func TestCountOutdated(t *testing.T) {
	finished := func(p corev1.Pod, phase corev1.PodPhase) corev1.Pod { p.Status.Phase = phase; return p }
	deleting := func(p corev1.Pod) corev1.Pod {
		p.DeletionTimestamp = &metav1.Time{}
		return p
	}
	old := func(ns, name string) corev1.Pod { return injectedPod(ns, name, "v1.1.0", testImage) }
	current := func(ns, name string) corev1.Pod { return injectedPod(ns, name, testVersion, testImage) }
	pending := old("a", "pending")
	pending.Status.Phase = corev1.PodPending
	ownElector := old("c", "own-elector")
	delete(ownElector.Annotations, webhook.AnnotationStatus)

	pods := []corev1.Pod{
		old("a", "1"), old("a", "2"), current("a", "3"), pending,
		finished(old("a", "succeeded"), corev1.PodSucceeded), finished(old("a", "failed"), corev1.PodFailed), deleting(old("a", "deleting")),
		current("b", "1"), deleting(old("b", "deleting")),
		ownElector,
		finished(old("d", "done"), corev1.PodSucceeded),
	}
	want := map[string]int{"a": 3, "b": 0}
	if diff := cmp.Diff(want, countOutdated(pods, testVersion, testImage)); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// TestOutdatedPodsCollector lists the pods through a client and exports the
// counts, on the leader only.
func TestOutdatedPodsCollector(t *testing.T) {
	objs := []corev1.Pod{
		injectedPod("a", "old", "v1.1.0", testImage),
		injectedPod("a", "new", testVersion, testImage),
		injectedPod("b", "new", testVersion, testImage),
	}
	// Not labelled: not an injected pod, whatever its annotations say.
	unlabelled := injectedPod("c", "unlabelled", "v1.1.0", testImage)
	unlabelled.Labels = nil
	objs = append(objs, unlabelled)
	b := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme)
	for i := range objs {
		b = b.WithObjects(&objs[i])
	}
	elected := make(chan struct{})
	c := &OutdatedPods{Reader: b.Build(), Version: testVersion, ElectorImage: testImage, Elected: elected}

	if diff := cmp.Diff(map[string]float64{}, gather(t, c)); diff != "" {
		t.Errorf("before leading (-want +got):\n%s", diff)
	}
	close(elected)
	if diff := cmp.Diff(map[string]float64{"a": 1, "b": 0}, gather(t, c)); diff != "" {
		t.Errorf("gauge by namespace (-want +got):\n%s", diff)
	}
}

// gather scrapes c through a registry that checks what it collects, and
// returns the gauge by namespace.
func gather(t *testing.T, c *OutdatedPods) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != OutdatedPodsMetric || f.GetHelp() != outdatedPodsHelp {
			t.Fatalf("gathered %s %q, want only %s", f.GetName(), f.GetHelp(), OutdatedPodsMetric)
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "namespace" || m.GetGauge() == nil {
				t.Fatalf("series %v, want a gauge with one label, namespace", m)
			}
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return got
}

// TestOutdatedPodsREADME: the README's injector metrics table documents
// the gauge, with its label and type.
func TestOutdatedPodsREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n### Injector metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Injector metrics section")
	}
	table, _, _ = strings.Cut(table, "\n#")
	row := "| `" + OutdatedPodsMetric + "{namespace}` | gauge |"
	if !strings.Contains(table, row) {
		t.Errorf("README.md's injector metrics table has no row starting %q", row)
	}
}
