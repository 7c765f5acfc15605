package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
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
// server would, gives exactly Inject's pod: the handler builds the patch from
// the few places Inject changes, so any other change would be lost here.
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
			p, err := Inject(appPod(map[string]string{AnnotationElection: "web"}), testSettings())
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
			// Inject sees the pod as the handler decodes it from the request.
			var sent corev1.Pod
			if err := json.Unmarshal(req.Object.Raw, &sent); err != nil {
				t.Fatal(err)
			}
			want, err := Inject(&sent, testSettings())
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
					t.Fatalf("Inject left the pod unchanged, but the response patches it: %s", ops)
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
				t.Errorf("patched pod differs from Inject's (-want +got):\n%s\npatch: %s", diff, ops)
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
	injected, err := Inject(appPod(map[string]string{AnnotationElection: "web"}), testSettings())
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
