package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Handler is the injector's mutating admission webhook for pods: it decodes
// the pod, hands it to Inject, and turns the result into an admission
// response. All the decisions are Inject's. Create it with NewHandler.
type Handler struct {
	settings Settings
	decoder  admission.Decoder
}

var _ admission.Handler = (*Handler)(nil)

// NewHandler returns a Handler that injects with settings s, after checking
// them, so that bad flags stop the injector at start-up.
func NewHandler(s Settings) (*Handler, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("injector settings: %w", err)
	}
	// A scheme of only the type the handler decodes.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering core/v1 in the decoder's scheme: %w", err)
	}
	return &Handler{settings: s, decoder: admission.NewDecoder(scheme)}, nil
}

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

	pod := &corev1.Pod{}
	if err := h.decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the pod: %w", err))
	}
	injected, err := Inject(pod, h.settings)
	if err != nil {
		log.V(1).Info("Denied pod", "namespace", req.Namespace, "reason", err.Error())
		return admission.Denied(err.Error())
	}
	// An unchanged pod gets no patch at all: diffing the raw request against
	// a re-encoded pod could yield spurious operations.
	if equality.Semantic.DeepEqual(pod, injected) {
		return admission.Allowed("")
	}
	raw, err := json.Marshal(injected)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the injected pod: %w", err))
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, raw)
}
