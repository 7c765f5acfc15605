package webhook

import (
	"context"
	"encoding/json"
	"net/http"
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

// TestHandlePatches checks that the patch, applied as the API server would,
// gives exactly Inject's pod.
func TestHandlePatches(t *testing.T) {
	pod := appPod(map[string]string{AnnotationElection: "web"})
	req := podRequest(t, pod)

	resp := newTestHandler(t).Handle(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("not allowed: %+v", resp.Result)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch || len(resp.Patches) == 0 {
		t.Fatalf("want JSON patches, got type %v and %d patches", resp.PatchType, len(resp.Patches))
	}

	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("applying the response's patch: %v", err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	want, err := Inject(pod, testSettings())
	if err != nil {
		t.Fatal(err)
	}
	want.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	if diff := cmp.Diff(want, &got); diff != "" {
		t.Errorf("patched pod differs from Inject's (-want +got):\n%s", diff)
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
		name    string
		handler *Handler
		req     admission.Request
		allowed bool
		code    int32
		message string
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
			message: "decoding the pod: couldn't get version/kind; json parse error: unexpected end of JSON input",
		},
		{
			name:    "no object is a bad request",
			req:     rawRequest(nil),
			code:    http.StatusBadRequest,
			message: "decoding the pod: there is no content to decode",
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
			name:    "a panic is an internal error",
			handler: &Handler{}, // no decoder: Decode panics
			req:     podRequest(t, appPod(map[string]string{AnnotationElection: "web"})),
			code:    http.StatusInternalServerError,
			message: "elector injector: internal error: runtime error: invalid memory address or nil pointer dereference",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.handler
			if h == nil {
				h = newTestHandler(t)
			}
			resp := h.Handle(context.Background(), tt.req)
			if resp.Allowed != tt.allowed {
				t.Errorf("allowed = %v, want %v", resp.Allowed, tt.allowed)
			}
			if len(resp.Patches) != 0 || resp.PatchType != nil {
				t.Errorf("want no patch, got %d patches: %v", len(resp.Patches), resp.Patches)
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
