package webhook

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestParseOptions checks how annotations override the settings; the
// errors are covered by TestInjectErrors.
func TestParseOptions(t *testing.T) {
	defaults := func(modify func(*Options)) Options {
		o := Options{
			Election:      "web",
			Port:          4040,
			Image:         "ghcr.io/vapor-ware/k8s-elector:test",
			CPURequest:    resource.MustParse("10m"),
			MemoryRequest: resource.MustParse("24Mi"),
			CPULimit:      resource.MustParse("100m"),
			MemoryLimit:   resource.MustParse("64Mi"),
			NativeSidecar: true,
		}
		modify(&o)
		return o
	}
	tests := []struct {
		name        string
		annotations map[string]string
		want        Options
	}{
		{
			name:        "settings only",
			annotations: map[string]string{AnnotationElection: "web"},
			want:        defaults(func(*Options) {}),
		},
		{
			name: "memory under the limit keeps the limit",
			annotations: map[string]string{
				AnnotationElection: "web",
				AnnotationMemory:   "32Mi",
			},
			want: defaults(func(o *Options) { o.MemoryRequest = resource.MustParse("32Mi") }),
		},
		{
			name: "memory over the limit raises it",
			annotations: map[string]string{
				AnnotationElection: "web",
				AnnotationMemory:   "100Mi",
			},
			want: defaults(func(o *Options) {
				o.MemoryRequest = resource.MustParse("100Mi")
				o.MemoryLimit = resource.MustParse("100Mi")
			}),
		},
		{
			name: "cpu over the limit raises it",
			annotations: map[string]string{
				AnnotationElection: "web",
				AnnotationCPU:      "250m",
			},
			want: defaults(func(o *Options) {
				o.CPURequest = resource.MustParse("250m")
				o.CPULimit = resource.MustParse("250m")
			}),
		},
		{
			name: "limits of none",
			annotations: map[string]string{
				AnnotationElection:    "web",
				AnnotationCPU:         "2",
				AnnotationCPULimit:    "0",
				AnnotationMemoryLimit: "0",
			},
			want: defaults(func(o *Options) {
				o.CPURequest = resource.MustParse("2")
				o.CPULimit = resource.MustParse("0")
				o.MemoryLimit = resource.MustParse("0")
			}),
		},
		{
			name: "every override",
			annotations: map[string]string{
				AnnotationElection:      "web",
				AnnotationPort:          "9090",
				AnnotationTTL:           "1m30s",
				AnnotationLockType:      "configmaps",
				AnnotationImage:         "example.com/elector:v2",
				AnnotationCPU:           "0.1",
				AnnotationNativeSidecar: "false",
				AnnotationPodLabel:      "role",
				AnnotationStatus:        StatusInjected,
			},
			want: defaults(func(o *Options) {
				o.Port = 9090
				o.TTL = 90 * time.Second
				o.LockType = "configmaps"
				o.Image = "example.com/elector:v2"
				o.CPURequest = resource.MustParse("100m")
				o.NativeSidecar = false
				o.PodLabel = "role"
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOptions(tt.annotations, testSettings())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseOptions (-want +got):\n%s", diff)
			}
		})
	}
}
