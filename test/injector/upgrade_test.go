package injector

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/grants"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestOutdatedPodsMetric runs the injector binary, stamped with a version
// as a release is: the pods it injects carry its version and the sidecar's
// image, and its /metrics counts by namespace the running injected pods of
// another version, down to 0 once they are gone.
func TestOutdatedPodsMetric(t *testing.T) {
	ctx := ctxFor(t, 120*time.Second)
	older, current := env.Namespace(t), env.Namespace(t)
	for _, ns := range []string{older, current} {
		serviceAccount(t, ns, "app")
	}
	metricsPort := freePort(t)
	inj := startInjectorWithEnvtestCert(t, fmt.Sprintf("-metrics-bind-address=127.0.0.1:%d", metricsPort))

	// 1. Pods the binary injects say so, with its version and image.
	for _, ns := range []string{older, current} {
		pod := createInjected(t, ns, "new") // retries until the API server reaches the binary
		got := map[string]string{
			webhook.AnnotationInjectorVersion: pod.Annotations[webhook.AnnotationInjectorVersion],
			webhook.AnnotationInjectedImage:   pod.Annotations[webhook.AnnotationInjectedImage],
		}
		want := map[string]string{webhook.AnnotationInjectorVersion: injectorVersion, webhook.AnnotationInjectedImage: testImage}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("pod %s/new's marks (-want +got):\n%s", ns, diff)
		}
	}

	// 2. A pod injected by an older release: created as it left it, which
	// the webhook leaves alone. And one of the same release that has
	// finished, which is not counted.
	oldPod := func(name string) *corev1.Pod {
		pod := ownElectorPod(name, "app", "-election=my-app", "-http=:4040")
		pod.Annotations = map[string]string{
			webhook.AnnotationElection:        "my-app",
			webhook.AnnotationStatus:          webhook.StatusInjected,
			webhook.AnnotationInjectorVersion: "v0.0.1",
			webhook.AnnotationInjectedImage:   "ghcr.io/vapor-ware/k8s-elector:v0.0.1",
		}
		return pod
	}
	for _, name := range []string{"old", "old-done"} {
		pod, err := env.Client.CoreV1().Pods(older).Create(ctx, oldPod(name), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if v := pod.Annotations[webhook.AnnotationInjectorVersion]; v != "v0.0.1" {
			t.Fatalf("the webhook changed the already-injected pod %s: version %q", name, v)
		}
	}
	done, err := env.Client.CoreV1().Pods(older).Get(ctx, "old-done", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done.Status.Phase = corev1.PodSucceeded
	if _, err := env.Client.CoreV1().Pods(older).UpdateStatus(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// 3. The gauge: one outdated pod in one namespace, none in the other.
	wantGauge := func(want map[string]float64) {
		t.Helper()
		eventually(t, 60*time.Second, func() error {
			got, err := scrapeOutdated(metricsPort)
			if err != nil {
				return err
			}
			for ns, n := range want {
				v, ok := got[ns]
				if !ok || v != n {
					return fmt.Errorf("%s{namespace=%q} = %v (present %v), want %v; all: %v", grants.OutdatedPodsMetric, ns, v, ok, n, got)
				}
			}
			return nil
		})
	}
	wantGauge(map[string]float64{older: 1, current: 0})

	// 4. Rolled: the old pod is gone, and the gauge is 0.
	deletePod(t, older, "old")
	wantGauge(map[string]float64{older: 0, current: 0})
	inj.terminate(t)
}

// scrapeOutdated reads the outdated-pods gauge, by namespace, from the
// injector's /metrics on port.
func scrapeOutdated(port int) (map[string]float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing /metrics: %w", err)
	}
	f, ok := families[grants.OutdatedPodsMetric]
	if !ok {
		return nil, fmt.Errorf("/metrics has no %s", grants.OutdatedPodsMetric)
	}
	got := map[string]float64{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "namespace" {
				got[l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return got, nil
}
