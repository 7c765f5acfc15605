package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

// Handler is the injector's mutating admission webhook for pods: it decodes
// the pod, hands it to inject, and turns the result into an admission
// response. All the decisions are inject's. Create it with NewHandler.
type Handler struct {
	settings Settings
}

var _ admission.Handler = (*Handler)(nil)

// NewHandler returns a Handler that injects with settings s, after checking
// them, so that bad flags stop the injector at start-up.
func NewHandler(s Settings) (*Handler, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("injector settings: %w", err)
	}
	return &Handler{settings: s}, nil
}

// podKind is the only kind the webhook's rules send. With matchPolicy
// Equivalent the API server converts any other version to it first.
var podKind = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}

// Handle answers one admission request:
//   - a pod with a problem in its annotations is denied, with every problem
//     in the message, so the user sees them in the ReplicaSet's events;
//   - a request that is not a pod is an error 400;
//   - a pod with nothing to inject is allowed without a patch;
//   - anything unexpected, a panic included, is an error 500: the API server
//     then applies the webhook's failurePolicy, and the injector keeps serving.
func (h *Handler) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	log := logf.FromContext(ctx)
	defer recoverInternal(log, "Injector panicked", &resp)

	// A pod's containers cannot change after creation; patching any other
	// operation would only get the request refused by the API server.
	if req.Operation != admissionv1.Create {
		return admission.Allowed("the elector is injected only when a pod is created")
	}

	pod, err := decodePod(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
	}
	injected, err := inject(pod, h.settings)
	if err != nil {
		log.V(1).Info("Denied pod", "namespace", req.Namespace, "reason", err.Error())
		return admission.Denied(err.Error())
	}
	ops, err := injectionPatch(pod, injected)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("elector injector: internal error: %w", err))
	}
	if len(ops) == 0 {
		return admission.Allowed("")
	}
	// Encoded here rather than left in Response.Patches for the webhook
	// server: jsonpatch.Operation's MarshalJSON makes encoding/json re-scan
	// every operation's value, which doubled the cost of the sidecar's.
	patch, err := json.Marshal(ops)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the injection patch: %w", err))
	}
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed:   true,
		Patch:     patch,
		PatchType: ptr.To(admissionv1.PatchTypeJSONPatch),
	}}
}

// recoverInternal, deferred by a handler, turns a panic into an error 500
// in *resp, and logs it as msg with its stack: the API server then applies
// the webhook's failure policy, and the injector keeps serving.
func recoverInternal(log logr.Logger, msg string, resp *admission.Response) {
	if r := recover(); r != nil {
		log.Error(fmt.Errorf("%v", r), msg, "stack", string(debug.Stack()))
		*resp = admission.Errored(http.StatusInternalServerError, fmt.Errorf("elector injector: internal error: %v", r))
	}
}

// patchOp is one JSON patch (RFC 6902) operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// decodePod reads the request's pod with the JSON decoder the API machinery
// uses (case-sensitive field names), without the scheme's pass that first
// finds the object's kind: the request already names it.
func decodePod(req admission.Request) (*corev1.Pod, error) {
	if req.Kind != podKind {
		return nil, fmt.Errorf("the request is for %s, not a v1 Pod; the webhook's rules must send only pods", req.Kind.String())
	}
	if len(req.Object.Raw) == 0 {
		return nil, errors.New("there is no content to decode")
	}
	pod := &corev1.Pod{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, pod); err != nil {
		return nil, err
	}
	return pod, nil
}

// injectionPatch returns the JSON patch that turns pod, as the API server
// sent it, into injected, inject's result. inject stays the only place that
// decides what a pod gets: the patch is read off the few places inject
// changes (a sidecar inserted among the init containers or appended to the
// containers, a volume appended, the service account named, the pod-level
// resources replaced, three annotations and a label set). It is much cheaper than diffing the whole pod
// as JSON, which was most of the handler's time. TestHandlePatches applies
// the patch to the raw request and checks that it gives inject's pod.
func injectionPatch(pod, injected *corev1.Pod) ([]patchOp, error) {
	containerName := func(c corev1.Container) string { return c.Name }
	var patches []patchOp
	var errs []error
	add := func(ops []patchOp, err error) {
		patches = append(patches, ops...)
		errs = append(errs, err)
	}
	add(listPatch("/spec/initContainers", pod.Spec.InitContainers, injected.Spec.InitContainers, containerName))
	add(listPatch("/spec/containers", pod.Spec.Containers, injected.Spec.Containers, containerName))
	add(listPatch("/spec/volumes", pod.Spec.Volumes, injected.Spec.Volumes, func(v corev1.Volume) string { return v.Name }))
	if pod.Spec.ServiceAccountName != injected.Spec.ServiceAccountName {
		patches = append(patches, addOp("/spec/serviceAccountName", injected.Spec.ServiceAccountName))
	}
	if !equality.Semantic.DeepEqual(pod.Spec.Resources, injected.Spec.Resources) {
		patches = append(patches, addOp("/spec/resources", injected.Spec.Resources))
	}
	patches = append(patches, mapPatch("/metadata/annotations", pod.Annotations, injected.Annotations)...)
	patches = append(patches, mapPatch("/metadata/labels", pod.Labels, injected.Labels)...)
	return patches, errors.Join(errs...)
}

// listPatch returns the operations that turn the list before into after,
// where after is before with items inserted at one index (its start, its
// end, or anywhere between), the way inject grows a list. Items are told
// apart by name; inject refuses a pod that already uses the name of an item
// it adds, so the inserted items start at the first name that differs.
// Anything else is an error rather than a wrong patch.
func listPatch[T any](path string, before, after []T, name func(T) string) ([]patchOp, error) {
	added := len(after) - len(before)
	switch {
	case added == 0 && sameNames(before, after, name):
		return nil, nil
	case added > 0 && len(before) == 0:
		// The field may be absent from the request, and a JSON patch cannot
		// add to a list that is not there: add the whole list.
		return []patchOp{addOp(path, after)}, nil
	case added > 0:
		at := 0
		for at < len(before) && name(before[at]) == name(after[at]) {
			at++
		}
		if !sameNames(before[at:], after[at+added:], name) {
			break
		}
		// Each "add" at an index shifts what follows, so the items go in
		// one after another: at, at+1, ... (an index equal to the list's
		// length appends).
		ops := make([]patchOp, 0, added)
		for i, item := range after[at : at+added] {
			ops = append(ops, addOp(path+"/"+strconv.Itoa(at+i), item))
		}
		return ops, nil
	}
	return nil, fmt.Errorf("%s: the injected list is not the pod's with items inserted at one place, so no patch is made for it", path)
}

func sameNames[T any](a, b []T, name func(T) string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if name(a[i]) != name(b[i]) {
			return false
		}
	}
	return true
}

// mapPatch returns the operations that turn the string map before into
// after: keys added or changed, and keys removed.
func mapPatch(path string, before, after map[string]string) []patchOp {
	if len(before) == 0 {
		if len(after) == 0 {
			return nil
		}
		// As for lists: the map may be absent from the request.
		return []patchOp{addOp(path, after)}
	}
	var ops []patchOp
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			ops = append(ops, addOp(path+"/"+escapePointer(k), v))
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			ops = append(ops, patchOp{Op: "remove", Path: path + "/" + escapePointer(k)})
		}
	}
	return ops
}

// pointerEscaper escapes a key for a JSON pointer (RFC 6901): "~" first,
// then "/", which every annotation and label key under a prefix contains.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func escapePointer(key string) string {
	return pointerEscaper.Replace(key)
}

// addOp adds value at path, or replaces what is there: "add" works whether
// or not the member exists, so the patch does not depend on the request
// having a field that it leaves out when empty.
func addOp(path string, value any) patchOp {
	return patchOp{Op: "add", Path: path, Value: value}
}

// MaxReviewSize is the largest admission review, in bytes, that the webhook
// decodes: controller-runtime's limit, 7 MiB (an old and a new object of up
// to 3 MiB each, plus the rest of the review).
const MaxReviewSize = 7 << 20

// maxDrain bounds how much of an oversize review is read, only to count its
// size, after the first MaxReviewSize bytes.
const maxDrain = 64 << 20

// PodPath is where the injector serves the injection (NewHTTPHandler);
// the MutatingWebhookConfiguration in config/webhook names it.
const PodPath = "/mutate-v1-pod"

// NewHTTPHandler returns what the webhook server serves at PodPath: controller-runtime's admission webhook around h, behind a check of
// the review's size. controller-runtime reads at most MaxReviewSize bytes
// and answers a larger review with an error that carries no request UID,
// which the API server reports as "received invalid webhook response" and
// not as a reason the user can act on. A pod declaring every port, with the
// managedFields the API server adds for each, is that large; so such a
// review is answered here, with a denial that names the cause.
func NewHTTPHandler(h admission.Handler) http.Handler {
	return &sizeGuard{next: &admission.Webhook{Handler: h}, limit: MaxReviewSize}
}

// sizeGuard answers reviews larger than limit, and hands the others to next.
type sizeGuard struct {
	next  http.Handler
	limit int64
}

func (g *sizeGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		g.next.ServeHTTP(w, r)
		return
	}
	defer r.Body.Close()
	body, err := io.ReadAll(io.LimitReader(r.Body, g.limit+1))
	if err != nil {
		g.write(w, r, "", admission.Errored(http.StatusBadRequest, fmt.Errorf("reading the admission review: %w", err)).AdmissionResponse)
		return
	}
	if int64(len(body)) <= g.limit {
		r.Body = io.NopCloser(bytes.NewReader(body))
		g.next.ServeHTTP(w, r)
		return
	}

	// The API server writes the request's UID near the start of the review,
	// so it is in what was read; the rest is only counted.
	apiVersion, uid := reviewIdentity(body)
	rest, _ := io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
	size := fmt.Sprintf("%d bytes", int64(len(body))+rest)
	if rest == maxDrain {
		size = "more than " + size
	}
	msg := fmt.Sprintf("the pod is too large for the elector injector: its admission review is %s, above the injector's limit of %d bytes; "+
		"a pod this large (thousands of container ports or environment variables, and the managedFields the API server records for each) is refused; "+
		"make the pod smaller, or remove its %s annotations", size, g.limit, AnnotationPrefix)
	log := logf.FromContext(r.Context())
	log.Info("Denied an oversize admission review", "uid", uid, "size", size)
	g.write(w, r, apiVersion, admissionv1.AdmissionResponse{
		UID:     uid,
		Allowed: false,
		Result: &metav1.Status{
			Status:  metav1.StatusFailure,
			Code:    http.StatusRequestEntityTooLarge,
			Reason:  metav1.StatusReasonRequestEntityTooLarge,
			Message: msg,
		},
	})
}

// reviewIdentity reads the apiVersion and the request's UID from the start
// of an admission review, token by token, so that a review cut short (or
// too large to decode) still yields them when they come first, as the API
// server writes them. What it cannot find is returned empty.
func reviewIdentity(prefix []byte) (apiVersion string, uid types.UID) {
	dec := json.NewDecoder(bytes.NewReader(prefix))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", ""
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return apiVersion, ""
		}
		switch key {
		case "apiVersion":
			if err := dec.Decode(&apiVersion); err != nil {
				return "", ""
			}
		case "request":
			if t, err := dec.Token(); err != nil || t != json.Delim('{') {
				return apiVersion, ""
			}
			for dec.More() {
				key, err := dec.Token()
				if err != nil {
					return apiVersion, ""
				}
				if key == "uid" {
					var s string
					if err := dec.Decode(&s); err != nil {
						return apiVersion, ""
					}
					return apiVersion, types.UID(s)
				}
				if err := skipValue(dec); err != nil {
					return apiVersion, ""
				}
			}
			return apiVersion, ""
		default:
			if err := skipValue(dec); err != nil {
				return apiVersion, ""
			}
		}
	}
	return apiVersion, ""
}

// skipValue reads past the next JSON value.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// write answers with resp in an AdmissionReview of apiVersion: the
// request's own, as the API server requires, or v1 when it is not known.
func (g *sizeGuard) write(w http.ResponseWriter, r *http.Request, apiVersion string, resp admissionv1.AdmissionResponse) {
	if apiVersion != "admission.k8s.io/v1beta1" {
		apiVersion = admissionv1.SchemeGroupVersion.String()
	}
	w.Header().Set("Content-Type", "application/json")
	err := json.NewEncoder(w).Encode(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: "AdmissionReview"},
		Response: &resp,
	})
	if err != nil {
		// The connection is gone; the API server applies the failurePolicy.
		logf.FromContext(r.Context()).Error(err, "Writing the admission response", "uid", resp.UID)
	}
}
