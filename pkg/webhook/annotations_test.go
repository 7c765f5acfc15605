package webhook

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vapor-ware/k8s-elector/pkg/election"
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
				AnnotationElection:           "web",
				AnnotationPort:               "9090",
				AnnotationTTL:                "1m30s",
				AnnotationLockType:           "configmaps",
				AnnotationImage:              "example.com/elector:v2",
				AnnotationCPU:                "0.1",
				AnnotationNativeSidecar:      "false",
				AnnotationPodLabel:           "role",
				AnnotationPreferNewest:       "false",
				AnnotationAppHealthURL:       "http://localhost:8080/healthz",
				AnnotationAppHealthPeriod:    "500ms",
				AnnotationAppHealthThreshold: "5",
				AnnotationNotifyURL:          "https://localhost:8443/elector",
				AnnotationLeaderService:      "web-leader",
				AnnotationStatus:             StatusInjected,
			},
			want: defaults(func(o *Options) {
				o.Port = 9090
				o.TTL = 90 * time.Second
				o.LockType = "configmaps"
				o.Image = "example.com/elector:v2"
				o.CPURequest = resource.MustParse("100m")
				o.NativeSidecar = false
				o.PodLabel = "role"
				o.Race = true
				o.AppHealthURL = "http://localhost:8080/healthz"
				o.AppHealthPeriod = 500 * time.Millisecond
				o.AppHealthThreshold = 5
				o.NotifyURL = "https://localhost:8443/elector"
				o.LeaderService = "web-leader"
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

// FuzzParseOptions: the annotation parser never panics, returns promptly,
// is deterministic, and what it accepts builds a sidecar the API server
// would take: a port in range, a valid election name, requests within
// limits, an allowed lock type.
//
//	go test -run '^$' -fuzz FuzzParseOptions -fuzztime 5m -fuzzminimizetime 5s ./pkg/webhook/ (or make fuzz)
func FuzzParseOptions(f *testing.F) {
	// One annotation per line, key=value.
	for _, seed := range []string{
		"elector.vapor.io/election=web",
		"elector.vapor.io/election=web\nelector.vapor.io/port=9090\nelector.vapor.io/ttl=15s\nelector.vapor.io/lock-type=configmaps",
		"elector.vapor.io/election=web\nelector.vapor.io/cpu=250m\nelector.vapor.io/cpu-limit=0\nelector.vapor.io/memory=1Gi\nelector.vapor.io/memory-limit=2Gi",
		"elector.vapor.io/election=web\nelector.vapor.io/memory=100Mi\nelector.vapor.io/memory-limit=64Mi",
		"elector.vapor.io/election=web\nelector.vapor.io/image=registry.example.com/elector:v1\nelector.vapor.io/native-sidecar=false\nelector.vapor.io/pod-label=example.com/role\nelector.vapor.io/prefer-newest=false",
		"elector.vapor.io/election=My_App\nelector.vapor.io/port=http\nelector.vapor.io/ttl=5x\nelector.vapor.io/lock-type=endpoints\nelector.vapor.io/tll=1",
		"elector.vapor.io/election=web\nelector.vapor.io/leader-service=web-leader",
		"elector.vapor.io/election=web\nelector.vapor.io/leader-service=Web.Leader",
		"elector.vapor.io/status=injected",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, lines string) {
		annotations := map[string]string{}
		for line := range strings.SplitSeq(lines, "\n") {
			k, v, _ := strings.Cut(line, "=")
			annotations[k] = v
		}
		s := testSettings()
		var o, again Options
		var err, errAgain error
		within(t, "ParseOptions", func() {
			o, err = ParseOptions(annotations, s)
			again, errAgain = ParseOptions(annotations, s)
		})
		if fmt.Sprint(err) != fmt.Sprint(errAgain) || !cmp.Equal(o, again) {
			t.Fatalf("ParseOptions is not deterministic: %v / %v", err, errAgain)
		}
		if err != nil {
			return
		}
		if o.Port < 1 || o.Port > 65535 {
			t.Errorf("accepted port %d", o.Port)
		}
		if e := election.ValidateName(o.Election); e != nil {
			t.Errorf("accepted election %q: %v", o.Election, e)
		}
		if o.LockType != "" && !slices.Contains(s.AllowedLockTypes, o.LockType) {
			t.Errorf("accepted lock type %q, not allowed", o.LockType)
		}
		if o.TTL != 0 && validateTTL(o.TTL) != nil {
			t.Errorf("accepted ttl %s", o.TTL)
		}
		if validateImage(o.Image) != nil {
			t.Errorf("accepted image %q", o.Image)
		}
		if o.ReturnWait < 0 || o.ReturnWait > o.ttl() {
			t.Errorf("accepted return wait %s with ttl %s", o.ReturnWait, o.ttl())
		}
		for _, q := range []struct{ request, limit resource.Quantity }{{o.CPURequest, o.CPULimit}, {o.MemoryRequest, o.MemoryLimit}} {
			if q.request.Sign() < 0 || q.limit.Sign() < 0 || (!q.limit.IsZero() && q.request.Cmp(q.limit) > 0) {
				t.Errorf("accepted request %s and limit %s", q.request.String(), q.limit.String())
			}
		}
		if o.LeaderService != "" && len(validation.IsDNS1035Label(o.LeaderService)) > 0 {
			t.Errorf("accepted leader service %q", o.LeaderService)
		}
		c := sidecar(o)
		if c.Name != ContainerName || len(c.Ports) != 1 || c.Ports[0].ContainerPort != o.Port {
			t.Errorf("sidecar = %+v", c)
		}
	})
}

// TestReturnWaitAnnotation: a return wait is a duration up to the TTL the
// elector runs with, and the error says what to change.
func TestReturnWaitAnnotation(t *testing.T) {
	tests := []struct {
		annotations map[string]string
		want        time.Duration
		wantErr     string
	}{
		{map[string]string{AnnotationReturnWait: "10s"}, 10 * time.Second, ""},
		{map[string]string{AnnotationReturnWait: "0s"}, 0, ""},
		{map[string]string{AnnotationReturnWait: "20s", AnnotationTTL: "20s"}, 20 * time.Second, ""},
		{map[string]string{AnnotationReturnWait: "11s"}, 0, "annotation elector.vapor.io/return-wait: 11s is over the TTL 10s; a leader that does not come back must not be waited for longer than one that crashed: lower it, or raise elector.vapor.io/ttl"},
		{map[string]string{AnnotationReturnWait: "-1s"}, 0, `annotation elector.vapor.io/return-wait: "-1s" is not 0s or a duration of 1ms or more (example: 0s, or 10s)`},
		{map[string]string{AnnotationReturnWait: "soon"}, 0, `annotation elector.vapor.io/return-wait: "soon" is not 0s or a duration of 1ms or more (example: 0s, or 10s)`},
	}
	for _, tt := range tests {
		tt.annotations[AnnotationElection] = "db"
		o, err := ParseOptions(tt.annotations, testSettings())
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%v: error %v, want %s", tt.annotations, err, tt.wantErr)
			}
			continue
		}
		if err != nil || o.ReturnWait != tt.want {
			t.Errorf("%v: return wait %s, error %v; want %s", tt.annotations, o.ReturnWait, err, tt.want)
		}
	}
}

// TestWebhookSkipsInjectorWrittenAnnotations: the webhook's matchConditions
// keep away pods whose only elector.vapor.io/ annotations are the ones the
// injector writes, the same keys wantsInjection passes over.
func TestWebhookSkipsInjectorWrittenAnnotations(t *testing.T) {
	manifest, err := os.ReadFile("../../config/webhook/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range knownAnnotations {
		if injectorWritten(a.Key) != strings.Contains(string(manifest), "'"+a.Key+"'") {
			t.Errorf("annotation %s: written by the injector %t, but config/webhook/manifests.yaml's matchConditions name it %t",
				a.Key, injectorWritten(a.Key), !injectorWritten(a.Key))
		}
	}
}

// TestREADMEAnnotations keeps the README's annotation reference equal to
// knownAnnotations.
func TestREADMEAnnotations(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- BEGIN annotations (checked by pkg/webhook's tests) -->\n")
	block, _, ok2 := strings.Cut(block, "<!-- END annotations -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no annotations block")
	}
	var want strings.Builder
	want.WriteString("| Annotation | Example | Meaning |\n|---|---|---|\n")
	for _, a := range knownAnnotations {
		fmt.Fprintf(&want, "| `%s` | `%s` | %s |\n", a.Key, a.Example, a.Help)
	}
	if block != want.String() {
		t.Errorf("README.md's annotations differ from knownAnnotations; paste this into it:\n%s", want.String())
	}
}
