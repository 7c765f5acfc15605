package grants

import (
	"cmp"
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// OutdatedPodsMetric is the gauge OutdatedPods exports, by namespace.
const OutdatedPodsMetric = "k8s_elector_injector_outdated_pods"

const outdatedPodsHelp = "Injected pods, not finished and not being deleted, whose sidecar another injector version or another elector image injected; " +
	"0 in a namespace whose injected pods are all up to date. Reported by the injector replica that leads."

var outdatedPodsDesc = prometheus.NewDesc(OutdatedPodsMetric, outdatedPodsHelp, []string{"namespace"}, nil)

// listTimeout bounds the cache read of one scrape. Once the cache has
// synced a list takes microseconds; before, it waits for the sync, and a
// scrape (10s by default in Prometheus) should rather miss the gauge than
// time out as a whole.
const listTimeout = 5 * time.Second

// OutdatedPods is a prometheus.Collector of OutdatedPodsMetric: by
// namespace, how many injected pods a rollout would give another sidecar
// than the one they run. It lists the reconciler's pod cache (CacheByObject)
// at scrape time, so it costs the API server nothing, and is never stale.
type OutdatedPods struct {
	// Reader lists pods from a cache set up with CacheByObject.
	Reader client.Reader
	// Version and ElectorImage are the running injector's: its version and
	// its -elector-image (webhook.Settings' InjectorVersion and ElectorImage).
	Version      string
	ElectorImage string
	// Elected is closed once this replica leads (the manager's Elected);
	// until then nothing is reported. The leader's reconciler watches the
	// injected pods anyway; a replica that does not lead would start a watch
	// of every injected pod in the cluster only for this gauge. Nil reports
	// at once.
	Elected <-chan struct{}
}

var _ prometheus.Collector = (*OutdatedPods)(nil)

// Describe implements prometheus.Collector.
func (c *OutdatedPods) Describe(ch chan<- *prometheus.Desc) {
	ch <- outdatedPodsDesc
}

// Collect implements prometheus.Collector. A failed list is logged and
// leaves the gauge out of this scrape: an error would fail the injector's
// whole /metrics, with the webhook's metrics in it.
func (c *OutdatedPods) Collect(ch chan<- prometheus.Metric) {
	if c.Elected != nil {
		select {
		case <-c.Elected:
		default:
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	var pods corev1.PodList
	// Only read, so not copied out of the cache.
	if err := c.Reader.List(ctx, &pods, client.MatchingLabels{webhook.LabelInjected: "true"}, client.UnsafeDisableDeepCopy); err != nil {
		logf.Log.WithName("outdated-pods").Error(err, "Listing the injected pods for the metric; it is left out of this scrape", "metric", OutdatedPodsMetric)
		return
	}
	for ns, n := range countOutdated(pods.Items, c.Version, c.ElectorImage) {
		ch <- prometheus.MustNewConstMetric(outdatedPodsDesc, prometheus.GaugeValue, float64(n), ns)
	}
}

// countOutdated returns, by namespace, how many of pods are outdated (see
// outdated). Every namespace with a counted pod has an entry, 0 when none of
// its pods is outdated, so that the gauge falls to 0 once the last outdated
// pod is rolled, rather than vanishing as if nothing were measured.
func countOutdated(pods []corev1.Pod, version, image string) map[string]int {
	counts := map[string]int{}
	for i := range pods {
		p := &pods[i]
		if !counted(p) {
			continue
		}
		n := counts[p.Namespace]
		if outdated(p, version, image) {
			n++
		}
		counts[p.Namespace] = n
	}
	return counts
}

// counted reports whether a pod is one the gauge is about: injected by the
// injector (the status annotation; a pod labelled injected for an elector
// container of its own is not the injector's to upgrade), neither finished
// nor being deleted, so that a pod on its way out is not reported as one to
// roll.
func counted(pod *corev1.Pod) bool {
	return pod.Annotations[webhook.AnnotationStatus] == webhook.StatusInjected &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed &&
		pod.DeletionTimestamp == nil
}

// outdated reports whether the injector at version, injecting image by
// default, would give pod another sidecar than it runs: the pod was injected
// by another version (or by a release before the version annotation, which
// has none), or with another image than it would get now, which is its own
// elector.vapor.io/image if it sets one, as in webhook.ParseOptions.
func outdated(pod *corev1.Pod, version, image string) bool {
	a := pod.Annotations
	if v, ok := a[webhook.AnnotationInjectorVersion]; !ok || v != version {
		return true
	}
	return a[webhook.AnnotationInjectedImage] != cmp.Or(a[webhook.AnnotationImage], image)
}
