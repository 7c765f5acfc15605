package webhook

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkHandle measures the admission handler on one pod, as the API
// server sends it: decoding, injection, and the JSON patch, encoded as the
// webhook server sends it back (Response.Complete). Besides ns/op it
// reports the 50th and 99th percentile per pod; the goal is a p99 under 1ms,
// so that the webhook adds nothing noticeable to a pod's creation.
//
//	go test -run '^$' -bench Handle ./pkg/webhook/
func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct {
		name        string
		annotations map[string]string
	}{
		{"injected", map[string]string{AnnotationElection: "web"}},
		{"all-annotations", map[string]string{
			AnnotationElection: "web", AnnotationPort: "5050", AnnotationTTL: "15s", AnnotationLockType: "configmaps",
			AnnotationCPU: "20m", AnnotationMemory: "48Mi", AnnotationPodLabel: "example.com/role",
		}},
		{"denied", map[string]string{AnnotationElection: "web", AnnotationTTL: "5x"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pod := appPod(bc.annotations)
			pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
			raw, err := json.Marshal(pod)
			if err != nil {
				b.Fatal(err)
			}
			req := rawRequest(raw)
			h, err := NewHandler(testSettings())
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			durations := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				resp := h.Handle(ctx, req)
				err := resp.Complete(req)
				durations = append(durations, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if resp.Result != nil && resp.Result.Code >= 500 {
					b.Fatalf("handler error: %+v", resp.Result)
				}
			}
			slices.Sort(durations)
			b.ReportMetric(float64(percentile(durations, 0.50).Nanoseconds()), "p50-ns/pod")
			b.ReportMetric(float64(percentile(durations, 0.99).Nanoseconds()), "p99-ns/pod")
		})
	}
}

// percentile returns the p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}
