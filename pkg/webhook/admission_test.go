package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

// podRequest is the request the API server sends for creating pod.
func podRequest(t *testing.T, pod *corev1.Pod) admission.Request {
	t.Helper()
	pod = pod.DeepCopy()
	pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return rawRequest(raw)
}

func rawRequest(raw []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "7f0c2d1e-0000-4000-8000-000000000001",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "default",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

func newTestHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := NewHandler(testSettings())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHandlePatches checks that the patch, applied to the request as the API
// server would, gives exactly inject's pod: the handler builds the patch from
// the few places inject changes, so any other change would be lost here.
func TestHandlePatches(t *testing.T) {
	tests := map[string]*corev1.Pod{
		// No labels, volumes, init containers or service account: each is
		// absent from the request and must be created whole.
		"bare pod": appPod(map[string]string{AnnotationElection: "web"}),
		"existing labels, volumes and service account": func() *corev1.Pod {
			p := appPod(map[string]string{AnnotationElection: "web", "example.com/owner": "team-a"})
			p.Labels = map[string]string{"app": "web", "example.com/tier": "front"}
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.ServiceAccountName = "web"
			return p
		}(),
		"after the pod's native sidecars": func() *corev1.Pod {
			p := appPod(map[string]string{AnnotationElection: "web"})
			always := ptr.To(corev1.ContainerRestartPolicyAlways)
			p.Spec.InitContainers = []corev1.Container{
				{Name: "proxy", Image: "envoy:1.31", RestartPolicy: always},
				{Name: "migrate", Image: "nginx:1.27"},
				{Name: "shipper", Image: "nginx:1.27", RestartPolicy: always},
				{Name: "warm", Image: "nginx:1.27"},
			}
			return p
		}(),
		"existing init containers": func() *corev1.Pod {
			p := appPod(map[string]string{AnnotationElection: "web"})
			p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "nginx:1.27"}, {Name: "shipper", Image: "nginx:1.27"}}
			return p
		}(),
		"plain container": func() *corev1.Pod {
			p := appPod(map[string]string{AnnotationElection: "web", AnnotationNativeSidecar: "false"})
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "proxy", Image: "envoy:1.31"})
			p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "nginx:1.27"}}
			return p
		}(),
		"no annotations": appPod(nil),
		"already injected": func() *corev1.Pod {
			p, err := inject(appPod(map[string]string{AnnotationElection: "web"}), testSettings())
			if err != nil {
				t.Fatal(err)
			}
			return p
		}(),
	}
	// And every input of the golden files.
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".injected.yaml") {
			tests["testdata/"+filepath.Base(in)] = readPod(t, in)
		}
	}

	for name, pod := range tests {
		t.Run(name, func(t *testing.T) {
			req := podRequest(t, pod)
			// inject sees the pod as the handler decodes it from the request.
			var sent corev1.Pod
			if err := json.Unmarshal(req.Object.Raw, &sent); err != nil {
				t.Fatal(err)
			}
			want, err := inject(&sent, testSettings())
			if err != nil {
				t.Fatal(err)
			}

			resp := newTestHandler(t).Handle(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("not allowed: %+v", resp.Result)
			}
			// What the webhook server sends back to the API server.
			if err := resp.Complete(req); err != nil {
				t.Fatal(err)
			}
			ops := resp.Patch
			if cmp.Equal(&sent, want) {
				if len(ops) != 0 || resp.PatchType != nil {
					t.Fatalf("inject left the pod unchanged, but the response patches it: %s", ops)
				}
				return
			}
			if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch || len(ops) == 0 {
				t.Fatalf("want a JSON patch, got type %v and patch %q", resp.PatchType, ops)
			}
			patch, err := jsonpatch.DecodePatch(ops)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply(req.Object.Raw)
			if err != nil {
				t.Fatalf("applying the response's patch %s: %v", ops, err)
			}
			var got corev1.Pod
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, &got); diff != "" {
				t.Errorf("patched pod differs from inject's (-want +got):\n%s\npatch: %s", diff, ops)
			}
		})
	}
}

func TestEscapePointer(t *testing.T) {
	for key, want := range map[string]string{
		"app":                     "app",
		"elector.vapor.io/status": "elector.vapor.io~1status",
		"example.com/a~b/c":       "example.com~1a~0b~1c",
		"~1":                      "~01",
	} {
		if got := escapePointer(key); got != want {
			t.Errorf("escapePointer(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestHandle(t *testing.T) {
	injected, err := inject(appPod(map[string]string{AnnotationElection: "web"}), testSettings())
	if err != nil {
		t.Fatal(err)
	}
	update := podRequest(t, appPod(map[string]string{AnnotationElection: "web"}))
	update.Operation = admissionv1.Update

	tests := []struct {
		name       string
		nilHandler bool
		req        admission.Request
		allowed    bool
		code       int32
		message    string
	}{
		{
			name:    "bad annotation is denied with the reason",
			req:     podRequest(t, appPod(map[string]string{AnnotationElection: "web", AnnotationTTL: "5x"})),
			code:    http.StatusForbidden,
			message: `annotation elector.vapor.io/ttl: "5x" is not a duration (example: 10s)`,
		},
		{
			name:    "malformed JSON is a bad request",
			req:     rawRequest([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":`)),
			code:    http.StatusBadRequest,
			message: "decoding the pod: unexpected end of JSON input",
		},
		{
			name:    "no object is a bad request",
			req:     rawRequest(nil),
			code:    http.StatusBadRequest,
			message: "decoding the pod: there is no content to decode",
		},
		{
			name: "not a pod is a bad request",
			req: func() admission.Request {
				r := podRequest(t, appPod(map[string]string{AnnotationElection: "web"}))
				r.Kind = metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
				return r
			}(),
			code:    http.StatusBadRequest,
			message: "decoding the pod: the request is for apps/v1, Kind=Deployment, not a v1 Pod; the webhook's rules must send only pods",
		},
		{
			name:    "unannotated pod is allowed unchanged",
			req:     podRequest(t, appPod(nil)),
			allowed: true,
			code:    http.StatusOK,
		},
		{
			name:    "injected pod is allowed unchanged",
			req:     podRequest(t, injected),
			allowed: true,
			code:    http.StatusOK,
		},
		{
			name:    "update is allowed unchanged",
			req:     update,
			allowed: true,
			code:    http.StatusOK,
			message: "the elector is injected only when a pod is created",
		},
		{
			name:       "a panic is an internal error",
			nilHandler: true, // reading its settings panics
			req:        podRequest(t, appPod(map[string]string{AnnotationElection: "web"})),
			code:       http.StatusInternalServerError,
			message:    "elector injector: internal error: runtime error: invalid memory address or nil pointer dereference",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t)
			if tt.nilHandler {
				h = nil
			}
			resp := h.Handle(context.Background(), tt.req)
			if resp.Allowed != tt.allowed {
				t.Errorf("allowed = %v, want %v", resp.Allowed, tt.allowed)
			}
			if len(resp.Patches) != 0 || len(resp.Patch) != 0 || resp.PatchType != nil {
				t.Errorf("want no patch, got %v %s", resp.Patches, resp.Patch)
			}
			if resp.Result == nil {
				t.Fatal("no result")
			}
			if resp.Result.Code != tt.code {
				t.Errorf("code = %d, want %d", resp.Result.Code, tt.code)
			}
			if diff := cmp.Diff(tt.message, resp.Result.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewHandlerRefusesBadSettings(t *testing.T) {
	s := testSettings()
	s.Port = 0
	if _, err := NewHandler(s); err == nil {
		t.Fatal("NewHandler accepted port 0")
	}
}

// review is the AdmissionReview the API server posts for req.
func review(t testing.TB, req admission.Request) []byte {
	t.Helper()
	raw, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req.AdmissionRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// serve posts body to NewHTTPHandler and decodes its answer.
func serve(t *testing.T, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	NewHTTPHandler(newTestHandler(t)).ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("HTTP status %d: %s", w.Code, w.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("the answer is not an AdmissionReview: %v: %.200s", err, w.Body)
	}
	if out.Response == nil {
		t.Fatalf("the answer has no response: %.200s", w.Body)
	}
	return &out
}

// wedgePod declares every TCP port, with the managedFields the API server
// records for each: its review is larger than MaxReviewSize.
func wedgePod() *corev1.Pod {
	pod := appPod(map[string]string{AnnotationElection: "web"})
	pod.Spec.Containers[0].Ports = allPorts()
	var fields strings.Builder
	fields.WriteString(`{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{"f:ports":{`)
	for p := 1; p <= 65535; p++ {
		if p > 1 {
			fields.WriteByte(',')
		}
		fmt.Fprintf(&fields, `"k:{\"containerPort\":%d,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:protocol":{}}`, p)
	}
	fields.WriteString(`}}}}}`)
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{
		Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields.String()),
	}}
	return pod
}

func TestHTTPHandler(t *testing.T) {
	t.Run("a review is handled", func(t *testing.T) {
		req := podRequest(t, appPod(map[string]string{AnnotationElection: "web"}))
		out := serve(t, review(t, req))
		if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
			t.Errorf("answer is a %s %s, want an admission.k8s.io/v1 AdmissionReview", out.APIVersion, out.Kind)
		}
		if out.Response.UID != req.UID || !out.Response.Allowed || len(out.Response.Patch) == 0 {
			t.Errorf("response = uid %q, allowed %v, patch of %d bytes; want uid %q, allowed, a patch",
				out.Response.UID, out.Response.Allowed, len(out.Response.Patch), req.UID)
		}
	})

	t.Run("an oversize review is denied with its cause", func(t *testing.T) {
		body := review(t, podRequest(t, wedgePod()))
		if len(body) <= MaxReviewSize {
			t.Fatalf("the wedge pod's review is %d bytes, not over the limit %d: the test does not test the limit", len(body), MaxReviewSize)
		}
		out := serve(t, body)
		res := out.Response
		if res.UID != "7f0c2d1e-0000-4000-8000-000000000001" || res.Allowed || res.Result == nil {
			t.Fatalf("response = %+v; want a denial of the request's UID", res)
		}
		if res.Result.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("code = %d, want %d", res.Result.Code, http.StatusRequestEntityTooLarge)
		}
		for _, want := range []string{
			"the pod is too large for the elector injector",
			fmt.Sprintf("its admission review is %d bytes", len(body)),
			fmt.Sprintf("limit of %d bytes", MaxReviewSize),
			"remove its elector.vapor.io/ annotations",
		} {
			if !strings.Contains(res.Result.Message, want) {
				t.Errorf("message %q does not contain %q", res.Result.Message, want)
			}
		}
	})

	t.Run("an oversize review keeps its apiVersion", func(t *testing.T) {
		body := review(t, podRequest(t, wedgePod()))
		body = bytes.Replace(body, []byte(`"admission.k8s.io/v1"`), []byte(`"admission.k8s.io/v1beta1"`), 1)
		out := serve(t, body)
		if out.APIVersion != "admission.k8s.io/v1beta1" || out.Response.UID == "" || out.Response.Allowed {
			t.Errorf("answer = %s, uid %q, allowed %v; want a v1beta1 denial with the UID", out.APIVersion, out.Response.UID, out.Response.Allowed)
		}
	})

	t.Run("an oversize body that is not a review is still answered", func(t *testing.T) {
		out := serve(t, bytes.Repeat([]byte("x"), MaxReviewSize+1))
		if out.Response.Allowed || out.Response.Result == nil || out.Response.Result.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("response = %+v, want a 413 denial", out.Response)
		}
	})
}

// TestHandleEveryPort: a pod that declares every port (small enough here,
// without managedFields, to reach the handler) gets an answer, a denial.
func TestHandleEveryPort(t *testing.T) {
	pod := appPod(map[string]string{AnnotationElection: "web"})
	pod.Spec.Containers[0].Ports = allPorts()
	resp := newTestHandler(t).Handle(context.Background(), podRequest(t, pod))
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "every TCP port is declared") {
		t.Errorf("response = %+v, want a denial for the declared ports", resp.Result)
	}
}

// FuzzHandle: the handler answers every request promptly and never with an
// internal error, and the patch it returns, applied to the request's JSON
// as the API server applies it, gives exactly inject's pod.
//
//	go test -run '^$' -fuzz FuzzHandle -fuzztime 5m -fuzzminimizetime 5s ./pkg/webhook/ (or make fuzz)
func FuzzHandle(f *testing.F) {
	addPodSeeds(f)
	h, err := NewHandler(testSettings())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, ports uint16) {
		// 1. Any bytes as the object, and as the start of a review that
		// is too large: an answer, never a panic or a hang.
		var resp admission.Response
		within(t, "Handle of raw bytes", func() {
			resp = h.Handle(context.Background(), rawRequest(raw))
			reviewIdentity(raw)
		})
		if resp.Result != nil && resp.Result.Code >= http.StatusInternalServerError {
			t.Fatalf("internal error on raw bytes: %s", resp.Result.Message)
		}

		// 2. The pod as the API server sends it: encoded from its typed
		// object, so in one canonical form.
		pod, ok := fuzzPod(raw, ports)
		if !ok {
			return
		}
		pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		sent, err := json.Marshal(pod)
		if err != nil {
			t.Skip("not encodable:", err)
		}
		req := rawRequest(sent)
		within(t, "Handle", func() {
			resp = h.Handle(context.Background(), req)
			err = resp.Complete(req)
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Result != nil && resp.Result.Code >= http.StatusInternalServerError {
			t.Fatalf("internal error: %s", resp.Result.Message)
		}
		decoded, err := decodePod(req)
		if err != nil {
			t.Fatalf("the handler accepted a pod it cannot decode again: %v", err)
		}
		want, injectErr := inject(decoded, testSettings())
		if injectErr != nil {
			if resp.Allowed || resp.Result.Message != injectErr.Error() {
				t.Fatalf("inject refused the pod with %q, the handler answered allowed=%v %q", injectErr, resp.Allowed, resp.Result.Message)
			}
			return
		}
		if !resp.Allowed {
			t.Fatalf("inject accepted the pod, the handler denied it: %q", resp.Result.Message)
		}
		got := decoded
		if len(resp.Patch) > 0 {
			patch, err := jsonpatch.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply(sent)
			if err != nil {
				t.Fatalf("applying the response's patch: %v", err)
			}
			got = &corev1.Pod{}
			if err := kjson.UnmarshalCaseSensitivePreserveInts(patched, got); err != nil {
				t.Fatal(err)
			}
		}
		if !equality.Semantic.DeepEqual(want, got) {
			if len(sent) < 64<<10 {
				t.Fatalf("patched pod differs from inject's (-want +got):\n%s\npatch: %s", cmp.Diff(want, got), resp.Patch)
			}
			t.Fatal("patched pod differs from inject's")
		}
	})
}

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
