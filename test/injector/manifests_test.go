package injector

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// TestShippedManifests checks config/manager and config/webhook against the
// API server's validation (a server-side dry run), and the injector's own pod
// against Pod Security "restricted", which its namespace enforces.
func TestShippedManifests(t *testing.T) {
	ctx := ctxFor(t, 20*time.Second)
	for _, f := range []string{"manager/manager.yaml", "webhook/service.yaml"} {
		if err := apply(ctx, filepath.Join("../../config", f), true); err != nil {
			t.Error(err)
		}
	}

	raw, err := os.ReadFile("../../config/manager/manager.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096).Decode(&d); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
	pod.Name = "injector-pod-security"
	if _, err := env.Client.CoreV1().Pods(systemNamespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the injector's pod is refused in its namespace: %v", err)
	}
}
