package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

// Handler is the injector's mutating admission webhook for pods: it decodes
// the pod, hands it to Inject, and turns the result into an admission
// response. All the decisions are Inject's. Create it with NewHandler.
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
	defer func() {
		if r := recover(); r != nil {
			log.Error(fmt.Errorf("%v", r), "Injector panicked", "stack", string(debug.Stack()))
			resp = admission.Errored(http.StatusInternalServerError, fmt.Errorf("elector injector: internal error: %v", r))
		}
	}()

	// A pod's containers cannot change after creation; patching any other
	// operation would only get the request refused by the API server.
	if req.Operation != admissionv1.Create {
		return admission.Allowed("the elector is injected only when a pod is created")
	}

	pod, err := decodePod(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
	}
	injected, err := Inject(pod, h.settings)
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
// sent it, into injected, Inject's result. Inject stays the only place that
// decides what a pod gets: the patch is read off the few places Inject
// changes (a sidecar inserted first among the init containers or appended to
// the containers, a volume appended, the service account named, an
// annotation and a label set). It is much cheaper than diffing the whole pod
// as JSON, which was most of the handler's time. TestHandlePatches applies
// the patch to the raw request and checks that it gives Inject's pod.
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
	patches = append(patches, mapPatch("/metadata/annotations", pod.Annotations, injected.Annotations)...)
	patches = append(patches, mapPatch("/metadata/labels", pod.Labels, injected.Labels)...)
	return patches, errors.Join(errs...)
}

// listPatch returns the operations that turn the list before into after,
// where after is before with items inserted at its start or appended at its
// end, the two ways Inject grows a list. Items are told apart by name, which
// the API server requires to be unique in each of these lists; anything else
// is an error rather than a wrong patch.
func listPatch[T any](path string, before, after []T, name func(T) string) ([]patchOp, error) {
	added := len(after) - len(before)
	switch {
	case added == 0 && sameNames(before, after, name):
		return nil, nil
	case added > 0 && len(before) == 0:
		// The field may be absent from the request, and a JSON patch cannot
		// add to a list that is not there: add the whole list.
		return []patchOp{addOp(path, after)}, nil
	case added > 0 && sameNames(before, after[:len(before)], name):
		ops := make([]patchOp, 0, added)
		for _, item := range after[len(before):] {
			ops = append(ops, addOp(path+"/-", item))
		}
		return ops, nil
	case added > 0 && sameNames(before, after[added:], name):
		ops := make([]patchOp, 0, added)
		for i, item := range after[:added] {
			ops = append(ops, addOp(path+"/"+strconv.Itoa(i), item))
		}
		return ops, nil
	}
	return nil, fmt.Errorf("%s: the injected list is not the pod's with items added at its start or end, so no patch is made for it", path)
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
