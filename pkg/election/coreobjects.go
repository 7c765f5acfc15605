package election

import (
	"encoding/json"
	"fmt"
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
)

// The core-group objects the elector reads and writes are declared here
// rather than taken from k8s.io/api/core/v1. That package's generated code
// would be a fifth of the binary, for five types of which the elector needs
// the metadata and a few fields of an Event and a Service (the
// EndpointSlice of -leader-service is declared here too); without it the binary is about
// 3 MB smaller, and most of a sidecar's memory is its binary's pages. They
// travel as JSON: the Lease, the lock every default election uses, keeps
// the generated type and protobuf.

// coreV1 is the core group's version.
var coreV1 = schema.GroupVersion{Version: "v1"}

// Event types.
const (
	eventNormal  = "Normal"
	eventWarning = "Warning"
)

// rawObject is a core-group object known by its metadata alone. Every other
// field is kept as the API server sent it and written back as it was, so an
// update loses nothing the elector does not know about: a ConfigMap's data,
// an Endpoints' subsets, fields added by newer API versions.
type rawObject struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	// fields are the object's top-level fields but apiVersion, kind and
	// metadata, as sent. They are never changed in place.
	fields map[string]json.RawMessage
}

// UnmarshalJSON decodes the metadata and keeps every other field as it is.
func (o *rawObject) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	*o = rawObject{}
	for name, into := range map[string]any{"apiVersion": &o.APIVersion, "kind": &o.Kind, "metadata": &o.ObjectMeta} {
		raw, ok := fields[name]
		if !ok {
			continue
		}
		// As apimachinery's serializer decodes: field names match only
		// in their own case.
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, into); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		delete(fields, name)
	}
	o.fields = fields
	return nil
}

// MarshalJSON encodes the metadata and every kept field.
func (o rawObject) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(o.fields)+3)
	for name, raw := range o.fields {
		out[name] = raw
	}
	if o.APIVersion != "" {
		out["apiVersion"] = o.APIVersion
	}
	if o.Kind != "" {
		out["kind"] = o.Kind
	}
	out["metadata"] = &o.ObjectMeta
	return json.Marshal(out)
}

func (o *rawObject) deepCopy() rawObject {
	c := rawObject{TypeMeta: o.TypeMeta, fields: maps.Clone(o.fields)}
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return c
}

// configMap, endpoints and corePod are the core objects the elector keeps a lock
// on, or labels.
type (
	configMap struct{ rawObject }
	endpoints struct{ rawObject }
	corePod   struct{ rawObject }
)

func (o *configMap) DeepCopyObject() runtime.Object { return &configMap{o.deepCopy()} }
func (o *endpoints) DeepCopyObject() runtime.Object { return &endpoints{o.deepCopy()} }
func (o *corePod) DeepCopyObject() runtime.Object   { return &corePod{o.deepCopy()} }

// event is a core/v1 Event with the fields the elector sets.
type event struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`

	InvolvedObject      objectReference `json:"involvedObject"`
	Reason              string          `json:"reason,omitempty"`
	Message             string          `json:"message,omitempty"`
	Source              eventSource     `json:"source,omitempty"`
	FirstTimestamp      metav1.Time     `json:"firstTimestamp,omitempty"`
	LastTimestamp       metav1.Time     `json:"lastTimestamp,omitempty"`
	Count               int32           `json:"count,omitempty"`
	Type                string          `json:"type,omitempty"`
	ReportingController string          `json:"reportingComponent"`
	ReportingInstance   string          `json:"reportingInstance"`
}

type eventSource struct {
	Component string `json:"component,omitempty"`
}

// objectReference is what an Event is about.
type objectReference struct {
	Kind            string    `json:"kind,omitempty"`
	Namespace       string    `json:"namespace,omitempty"`
	Name            string    `json:"name,omitempty"`
	UID             types.UID `json:"uid,omitempty"`
	APIVersion      string    `json:"apiVersion,omitempty"`
	ResourceVersion string    `json:"resourceVersion,omitempty"`
}

func (o *event) DeepCopyObject() runtime.Object {
	c := *o
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// coreService is a core/v1 Service with the fields -leader-service reads.
type coreService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Type     string            `json:"type,omitempty"`
		Selector map[string]string `json:"selector,omitempty"`
		Ports    []servicePort     `json:"ports,omitempty"`
	} `json:"spec"`
}

// servicePort is one port of a Service.
type servicePort struct {
	Name        string             `json:"name,omitempty"`
	Protocol    string             `json:"protocol,omitempty"`
	AppProtocol string             `json:"appProtocol,omitempty"`
	Port        int32              `json:"port"`
	TargetPort  intstr.IntOrString `json:"targetPort,omitzero"`
}

func (o *coreService) DeepCopyObject() runtime.Object {
	c := *o
	o.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

// discoveryV1 is the group of EndpointSlices.
var discoveryV1 = schema.GroupVersion{Group: "discovery.k8s.io", Version: "v1"}

// endpointSlice is the EndpointSlice -leader-service keeps. Like a lock
// object, it keeps every field as it was sent; the elector replaces
// addressType, endpoints and ports.
type endpointSlice struct{ rawObject }

func (o *endpointSlice) DeepCopyObject() runtime.Object { return &endpointSlice{o.deepCopy()} }

// sliceEndpoint, endpointConditions and slicePort are the parts of an
// EndpointSlice that the elector writes.
type (
	sliceEndpoint struct {
		Addresses  []string           `json:"addresses"`
		Conditions endpointConditions `json:"conditions"`
		TargetRef  *objectReference   `json:"targetRef,omitempty"`
	}
	endpointConditions struct {
		Ready       *bool `json:"ready,omitempty"`
		Serving     *bool `json:"serving,omitempty"`
		Terminating *bool `json:"terminating,omitempty"`
	}
	slicePort struct {
		Name        string `json:"name"`
		Protocol    string `json:"protocol"`
		Port        int32  `json:"port"`
		AppProtocol string `json:"appProtocol,omitempty"`
	}
)

// addCoreTypes registers the core objects, and the EndpointSlice, with s.
func addCoreTypes(s *runtime.Scheme) {
	s.AddKnownTypeWithName(coreV1.WithKind("ConfigMap"), &configMap{})
	s.AddKnownTypeWithName(coreV1.WithKind("Endpoints"), &endpoints{})
	s.AddKnownTypeWithName(coreV1.WithKind("Pod"), &corePod{})
	s.AddKnownTypeWithName(coreV1.WithKind("Event"), &event{})
	s.AddKnownTypeWithName(coreV1.WithKind("Service"), &coreService{})
	metav1.AddToGroupVersion(s, coreV1)
	s.AddKnownTypeWithName(discoveryV1.WithKind("EndpointSlice"), &endpointSlice{})
	metav1.AddToGroupVersion(s, discoveryV1)
}
