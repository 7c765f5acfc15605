package webhook

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// sliceCase is one write, with the pod and Service the handler would read.
type sliceCase struct {
	w   SliceWrite
	pod *corev1.Pod
	svc *corev1.Service
}

// legitimate is the write an elector makes: pod web-0 of account web, with
// -leader-service=web-leader, lists its IP in the slice web-leader of the
// Service that opted in to its election, web. edit changes it.
func legitimate(edit ...func(*sliceCase)) sliceCase {
	c := sliceCase{
		w: SliceWrite{
			Operation: admissionv1.Create,
			Namespace: "shop",
			User: authenticationv1.UserInfo{
				Username: "system:serviceaccount:shop:web",
				Extra: map[string]authenticationv1.ExtraValue{
					ExtraPodName: {"web-0"},
					ExtraPodUID:  {"uid-web-0"},
				},
			},
			Slice: &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{
					Name:        "web-leader",
					Namespace:   "shop",
					Labels:      map[string]string{election.LabelServiceName: "web-leader", election.LabelManagedBy: election.ManagedByElector},
					Annotations: map[string]string{election.AnnotationEpoch: "4242"},
					OwnerReferences: []metav1.OwnerReference{
						{APIVersion: "v1", Kind: "Service", Name: "web-leader", UID: "uid-svc"},
					},
				},
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{
					Addresses:  []string{"10.1.2.3"},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-0"},
				}},
				Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			},
		},
		pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "uid-web-0"},
			Spec: corev1.PodSpec{
				ServiceAccountName: "web",
				NodeName:           "node-a",
				InitContainers: []corev1.Container{{
					Name: ContainerName,
					Args: []string{"-election=web", "-http=:4040", "-leader-service=web-leader"},
				}},
				Containers: []corev1.Container{{Name: "app", Args: []string{"-leader-service=api-leader"}}},
			},
			Status: corev1.PodStatus{
				Phase:  corev1.PodRunning,
				PodIPs: []corev1.PodIP{{IP: "10.1.2.3"}, {IP: "fd00::3"}},
			},
		},
		svc: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web-leader", Namespace: "shop", UID: "uid-svc",
				Annotations: map[string]string{election.AnnotationElection: "web"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		},
	}
	for _, e := range edit {
		e(&c)
	}
	return c
}

// asUpdate makes the write an update of the slice as an elector left it.
func asUpdate(c *sliceCase) {
	c.w.Operation = admissionv1.Update
	c.w.Old = c.w.Slice.DeepCopy()
	c.w.Old.Endpoints = nil
}

// withdrawal removes the endpoint.
func withdrawal(c *sliceCase) { c.w.Slice.Endpoints = []discoveryv1.Endpoint{} }

func endpoint(c *sliceCase) *discoveryv1.Endpoint { return &c.w.Slice.Endpoints[0] }

func TestReviewEndpointSliceAllows(t *testing.T) {
	for name, c := range map[string]sliceCase{
		"create with the pod's IP":     legitimate(),
		"update of an elector's slice": legitimate(asUpdate),
		"withdrawal, create":           legitimate(withdrawal),
		"withdrawal, update":           legitimate(asUpdate, withdrawal),
		"withdrawal, endpoints null":   legitimate(asUpdate, func(c *sliceCase) { c.w.Slice.Endpoints = nil }),
		"the pod's IPv6 address": legitimate(func(c *sliceCase) {
			c.w.Slice.AddressType = discoveryv1.AddressTypeIPv6
			endpoint(c).Addresses = []string{"fd00::3"}
		}),
		"no owner, no epoch, no conditions": legitimate(func(c *sliceCase) {
			c.w.Slice.OwnerReferences, c.w.Slice.Annotations = nil, nil
			endpoint(c).Conditions = discoveryv1.EndpointConditions{}
		}),
		"targetRef with the pod's uid and v1, nodeName the pod's": legitimate(func(c *sliceCase) {
			endpoint(c).TargetRef.UID, endpoint(c).TargetRef.APIVersion = "uid-web-0", "v1"
			endpoint(c).NodeName = ptr.To("node-a")
		}),
		"the default account, a plain elector container, --leader-service, the last flag wins": legitimate(func(c *sliceCase) {
			c.w.User.Username = "system:serviceaccount:shop:default"
			c.pod.Spec.ServiceAccountName = ""
			c.pod.Spec.InitContainers, c.pod.Spec.Containers = nil, []corev1.Container{{
				Name: ContainerName, Args: []string{"-election=web", "-leader-service=other", "--leader-service=web-leader"},
			}}
		}),
		"a finished pod withdraws": legitimate(asUpdate, withdrawal, func(c *sliceCase) {
			c.pod.Status.Phase, c.pod.Status.PodIPs = corev1.PodFailed, nil
		}),
		"a terminating pod withdraws": legitimate(asUpdate, withdrawal, func(c *sliceCase) {
			c.pod.DeletionTimestamp = &metav1.Time{}
		}),
		"a headless Service": legitimate(func(c *sliceCase) { c.svc.Spec.ClusterIP = corev1.ClusterIPNone }),
		"its own address withdrawn from a Service that took its consent back, or lost it": legitimate(asUpdate, func(c *sliceCase) {
			c.w.Old.Endpoints = c.w.Slice.Endpoints
		}, withdrawal, func(c *sliceCase) { c.svc = nil }),
	} {
		t.Run(name, func(t *testing.T) {
			if err := ReviewEndpointSlice(c.w, c.pod, c.svc); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

func TestReviewEndpointSliceRefuses(t *testing.T) {
	optIn := "annotate Service web-leader with elector.vapor.io/election=web"
	tests := []struct {
		name string
		c    sliceCase
		want []string // each must be in the message
	}{
		// Who writes.
		{"a user", legitimate(func(c *sliceCase) { c.w.User.Username = "alice" }), []string{`user "alice" is not a service account`}},
		{"an account of another namespace", legitimate(func(c *sliceCase) { c.w.User.Username = "system:serviceaccount:other:web" }),
			[]string{"service account other/web may not write EndpointSlices in namespace shop"}},
		{"a token not bound to a pod", legitimate(func(c *sliceCase) { c.w.User.Extra = nil }),
			[]string{"is not bound to a pod", "projected service-account token"}},
		{"a token without the pod's uid", legitimate(func(c *sliceCase) { delete(c.w.User.Extra, ExtraPodUID) }), []string{"is not bound to a pod"}},
		{"two pod names", legitimate(func(c *sliceCase) { c.w.User.Extra[ExtraPodName] = []string{"web-0", "web-1"} }), []string{"is not bound to a pod"}},
		{"a delete", legitimate(func(c *sliceCase) { c.w.Operation = admissionv1.Delete }), []string{"not delete it"}},
		{"no object", legitimate(func(c *sliceCase) { c.w.Slice = nil }), []string{"carries no EndpointSlice"}},

		// The slice's own shape.
		{"no name", legitimate(func(c *sliceCase) { c.w.Slice.Name, c.w.Slice.GenerateName = "", "web-leader-" }), []string{"has no name"}},
		{"another name than its Service label", legitimate(func(c *sliceCase) { c.w.Slice.Name = "kubernetes" }),
			[]string{`label kubernetes.io/service-name is "web-leader": it must be the slice's own name`}},
		{"another Service", legitimate(func(c *sliceCase) { c.w.Slice.Labels[election.LabelServiceName] = "kubernetes" }),
			[]string{"label kubernetes.io/service-name"}},
		{"the EndpointSlice controller's managed-by", legitimate(func(c *sliceCase) {
			c.w.Slice.Labels[election.LabelManagedBy] = "endpointslice-controller.k8s.io"
		}), []string{`label endpointslice.kubernetes.io/managed-by is "endpointslice-controller.k8s.io": it must be elector.vapor.io`}},
		{"an extra label", legitimate(func(c *sliceCase) { c.w.Slice.Labels["app"] = "web" }), []string{"labels app: an elector's slice carries only"}},
		{"an extra annotation", legitimate(func(c *sliceCase) { c.w.Slice.Annotations["example.com/x"] = "y" }), []string{"annotations example.com/x"}},
		{"a finalizer", legitimate(func(c *sliceCase) { c.w.Slice.Finalizers = []string{"example.com/keep"} }), []string{"finalizers example.com/keep"}},
		{"two owners", legitimate(func(c *sliceCase) {
			c.w.Slice.OwnerReferences = append(c.w.Slice.OwnerReferences, c.w.Slice.OwnerReferences[0])
		}), []string{"2 ownerReferences"}},
		{"another owner", legitimate(func(c *sliceCase) {
			c.w.Slice.OwnerReferences[0] = metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-svc"}
		}), []string{"ownerReference apps/v1 Deployment web"}},
		{"a controlling owner", legitimate(func(c *sliceCase) { c.w.Slice.OwnerReferences[0].Controller = ptr.To(true) }),
			[]string{"controller and blockOwnerDeletion must not be set"}},
		{"an owner of another uid", legitimate(func(c *sliceCase) { c.w.Slice.OwnerReferences[0].UID = "uid-old" }),
			[]string{`uid "uid-old", and the Service's uid is uid-svc`}},
		{"taking over another controller's slice", legitimate(asUpdate, func(c *sliceCase) {
			c.w.Old.Labels = map[string]string{election.LabelServiceName: "web-leader", election.LabelManagedBy: "endpointslicemirroring-controller.k8s.io"}
		}), []string{`managed by "endpointslicemirroring-controller.k8s.io", not by an elector`}},
		{"an update without the old object", legitimate(asUpdate, func(c *sliceCase) { c.w.Old = nil }), []string{"no old object"}},
		{"an FQDN slice", legitimate(func(c *sliceCase) { c.w.Slice.AddressType = discoveryv1.AddressTypeFQDN }), []string{`addressType "FQDN"`}},
		{"two endpoints", legitimate(func(c *sliceCase) {
			c.w.Slice.Endpoints = append(c.w.Slice.Endpoints, c.w.Slice.Endpoints[0])
		}), []string{"it lists 2 endpoints"}},
		{"two addresses", legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"10.1.2.3", "10.1.2.3"} }), []string{"has 2 addresses"}},
		{"no address", legitimate(func(c *sliceCase) { endpoint(c).Addresses = nil }), []string{"has 0 addresses"}},
		{"a hostname", legitimate(func(c *sliceCase) { endpoint(c).Hostname = ptr.To("www") }), []string{`hostname "www"`}},
		{"a zone", legitimate(func(c *sliceCase) { endpoint(c).Zone = ptr.To("a") }), []string{"a zone, hints or topology"}},
		{"hints", legitimate(func(c *sliceCase) { endpoint(c).Hints = &discoveryv1.EndpointHints{} }), []string{"a zone, hints or topology"}},
		{"no targetRef", legitimate(func(c *sliceCase) { endpoint(c).TargetRef = nil }), []string{"has no targetRef: it must name pod web-0"}},
		{"another pod's targetRef", legitimate(func(c *sliceCase) { endpoint(c).TargetRef.Name = "web-1" }),
			[]string{"targetRef is Pod shop/web-1: it must be Pod shop/web-0"}},
		{"a targetRef in another namespace", legitimate(func(c *sliceCase) { endpoint(c).TargetRef.Namespace = "kube-system" }), []string{"targetRef is Pod kube-system/web-0"}},
		{"a Node as targetRef", legitimate(func(c *sliceCase) { endpoint(c).TargetRef.Kind = "Node" }), []string{"targetRef is Node"}},
		{"a targetRef of another uid", legitimate(func(c *sliceCase) { endpoint(c).TargetRef.UID = "uid-web-1" }),
			[]string{"targetRef has uid uid-web-1, and pod web-0's is uid-web-0"}},
		{"another node", legitimate(func(c *sliceCase) { endpoint(c).NodeName = ptr.To("node-b") }), []string{`nodeName is "node-b", and pod web-0 runs on "node-a"`}},

		// The pod of the token.
		{"a deleted pod", legitimate(func(c *sliceCase) { c.pod = nil }), []string{"pod shop/web-0, which the token is bound to, does not exist"}},
		{"another pod than the token's", legitimate(func(c *sliceCase) { c.pod.Name = "web-1" }), []string{"pod shop/web-1 is not the pod the token is bound to, shop/web-0"}},
		{"a pod of another namespace", legitimate(func(c *sliceCase) { c.pod.Namespace = "other" }), []string{"pod other/web-0 is not the pod the token is bound to"}},
		{"a pod of the same name since", legitimate(func(c *sliceCase) { c.pod.UID = "uid-web-0-new" }), []string{"is not the pod the token is bound to"}},
		{"a pod of another account", legitimate(func(c *sliceCase) { c.pod.Spec.ServiceAccountName = "other" }),
			[]string{"pod web-0 runs as service account other, not web"}},
		{"a pod without an elector", legitimate(func(c *sliceCase) { c.pod.Spec.InitContainers = nil }),
			[]string{"pod web-0 has no elector container", "elector.vapor.io/leader-service=web-leader"}},
		{"an elector without -leader-service", legitimate(func(c *sliceCase) { c.pod.Spec.InitContainers[0].Args = []string{"-election=web"} }),
			[]string{"pod web-0's elector runs without -leader-service, and may not write EndpointSlice web-leader", "annotate the pod (its template) elector.vapor.io/leader-service=web-leader"}},
		{"an elector with another -leader-service", legitimate(func(c *sliceCase) {
			c.pod.Spec.InitContainers[0].Args = []string{"-election=web", "-leader-service=web-leader", "-leader-service=api-leader"}
		}), []string{"runs with -leader-service=api-leader"}},
		{"-leader-service in another form", legitimate(func(c *sliceCase) {
			c.pod.Spec.InitContainers[0].Args = []string{"-election=web", "-leader-service", "web-leader"}
		}), []string{"runs without -leader-service"}},
		{"an elector without an election", legitimate(func(c *sliceCase) { c.pod.Spec.InitContainers[0].Args = []string{"-leader-service=web-leader"} }),
			[]string{"has no valid -election"}},
		{"a pod on the node's network", legitimate(func(c *sliceCase) { c.pod.Spec.HostNetwork = true }), []string{"runs on the node's network"}},

		// The Service.
		{"no Service", legitimate(func(c *sliceCase) { c.svc = nil }), []string{"the Service web-leader does not exist in namespace shop: create it with no selector and " + optIn}},
		{"a Service with a selector", legitimate(func(c *sliceCase) { c.svc.Spec.Selector = map[string]string{"app": "web"} }), []string{"has a selector", "remove spec.selector"}},
		{"an ExternalName Service", legitimate(func(c *sliceCase) { c.svc.Spec.Type = corev1.ServiceTypeExternalName }), []string{"ExternalName"}},
		{"a Service that did not opt in", legitimate(func(c *sliceCase) { c.svc.Annotations = nil }), []string{"has not opted in", optIn}},
		{"a Service of another election", legitimate(func(c *sliceCase) { c.svc.Annotations[election.AnnotationElection] = "db" }),
			[]string{`routes to the leader of election "db", not of "web"`, optIn}},
		{"a withdrawal from a Service that did not opt in", legitimate(asUpdate, withdrawal, func(c *sliceCase) { c.svc.Annotations = nil }), []string{"has not opted in"}},
		{"a withdrawal of another pod's address from a Service that did not opt in", legitimate(asUpdate, func(c *sliceCase) {
			c.w.Old.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.1.2.4"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1"}}}
		}, withdrawal, func(c *sliceCase) { c.svc.Annotations = nil }), []string{"has not opted in"}},
		{"a withdrawal by a pod without -leader-service", legitimate(asUpdate, withdrawal, func(c *sliceCase) {
			c.pod.Spec.InitContainers[0].Args = []string{"-election=web"}
		}), []string{"runs without -leader-service"}},

		// The address.
		{"another pod's IP", legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"10.1.2.4"} }),
			[]string{"lists 10.1.2.4, which is not an IP of pod web-0 (10.1.2.3, fd00::3)"}},
		{"the API server's IP", legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"10.0.0.1"} }), []string{"10.0.0.1, which is not an IP of pod web-0"}},
		{"the pod's IP, spelt otherwise", legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"010.001.002.003"} }), []string{"is not an IP of pod web-0"}},
		{"a pod without an IP yet", legitimate(func(c *sliceCase) { c.pod.Status.PodIPs = nil }), []string{"pod web-0 has no IP yet"}},
		{"an IPv6 address in an IPv4 slice", legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"fd00::3"} }),
			[]string{"has addressType IPv4, and lists fd00::3, an IPv6 address: set addressType IPv6"}},
		{"an IPv4 address in an IPv6 slice", legitimate(func(c *sliceCase) { c.w.Slice.AddressType = discoveryv1.AddressTypeIPv6 }),
			[]string{"set addressType IPv4"}},
		{"a finished pod's address", legitimate(func(c *sliceCase) { c.pod.Status.Phase = corev1.PodSucceeded }), []string{"pod web-0 has finished (phase Succeeded)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ReviewEndpointSlice(tt.c.w, tt.c.pod, tt.c.svc)
			if err == nil {
				t.Fatal("allowed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestReviewEndpointSliceReportsEveryShapeError: the slice's own problems
// come in one message, so that they are fixed in one go.
func TestReviewEndpointSliceReportsEveryShapeError(t *testing.T) {
	c := legitimate(func(c *sliceCase) {
		c.w.Slice.Labels["app"] = "web"
		c.w.Slice.Finalizers = []string{"x/y"}
		endpoint(c).Hostname = ptr.To("www")
	})
	err := ReviewEndpointSlice(c.w, c.pod, c.svc)
	want := "EndpointSlice web-leader: labels app: an elector's slice carries only kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by; remove them\n" +
		"EndpointSlice web-leader: finalizers x/y: an elector's slice has none; remove them\n" +
		`EndpointSlice web-leader: its endpoint has the hostname "www": an elector's endpoint has none`
	if diff := gocmp.Diff(want, fmt.Sprint(err)); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// fakeReader answers Get from objects by namespace/name, and counts the
// reads.
type fakeReader struct {
	objects map[string]client.Object
	reads   int
	err     error
}

func (r *fakeReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.reads++
	if r.err != nil {
		return r.err
	}
	o, ok := r.objects[key.String()]
	if !ok || fmt.Sprintf("%T", o) != fmt.Sprintf("%T", obj) {
		return apierrors.NewNotFound(schema.GroupResource{}, key.Name)
	}
	switch out := obj.(type) {
	case *corev1.Pod:
		*out = *o.(*corev1.Pod).DeepCopy()
	case *corev1.Service:
		*out = *o.(*corev1.Service).DeepCopy()
	}
	return nil
}

func (r *fakeReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not implemented")
}

// sliceReview is the admission request of c's write.
func sliceReview(t *testing.T, c sliceCase) admission.Request {
	t.Helper()
	raw := func(s *discoveryv1.EndpointSlice) runtime.RawExtension {
		if s == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "review-1",
		Kind:      metav1.GroupVersionKind{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"},
		Namespace: c.w.Namespace,
		Name:      c.w.Slice.Name,
		Operation: c.w.Operation,
		UserInfo:  c.w.User,
		Object:    raw(c.w.Slice),
		OldObject: raw(c.w.Old),
	}}
}

// TestEndpointSliceHandlerReads: the pod comes from the cache when the
// cache holds it as the write needs it, and is read live when the cache
// lacks it, holds another pod of the name, or has not seen its IP yet; the
// Service is read live; a write that is refused without reads costs none.
func TestEndpointSliceHandlerReads(t *testing.T) {
	c := legitimate()
	trimmed := func(edit func(*corev1.Pod)) *corev1.Pod {
		p := c.pod.DeepCopy()
		edit(p)
		return p
	}
	tests := []struct {
		name       string
		cached     *corev1.Pod
		write      sliceCase
		allowed    bool
		cacheReads int
		liveReads  int
	}{
		{"cached as needed", c.pod, c, true, 1, 1},
		{"not cached", nil, c, true, 1, 2},
		{"cached before it had an IP", trimmed(func(p *corev1.Pod) { p.Status.PodIPs = nil }), c, true, 1, 2},
		{"cached with another uid", trimmed(func(p *corev1.Pod) { p.UID = "uid-old" }), c, true, 1, 2},
		{"a withdrawal, cached without an IP", trimmed(func(p *corev1.Pod) { p.Status.PodIPs = nil }), legitimate(withdrawal), true, 1, 1},
		{"an address that is not the pod's", c.pod, legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"10.0.0.1"} }), false, 1, 2},
		{"a token not bound to a pod, refused before any read", c.pod, legitimate(func(c *sliceCase) { c.w.User.Extra = nil }), false, 0, 0},
		{"an extra label, refused before any read", c.pod, legitimate(func(c *sliceCase) { c.w.Slice.Labels["x"] = "y" }), false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := &fakeReader{objects: map[string]client.Object{}}
			if tt.cached != nil {
				cache.objects["shop/web-0"] = tt.cached
			}
			live := &fakeReader{objects: map[string]client.Object{"shop/web-0": c.pod, "shop/web-leader": c.svc}}
			h := &EndpointSliceHandler{Cache: cache, Live: live}
			resp := h.Handle(context.Background(), sliceReview(t, tt.write))
			if resp.Allowed != tt.allowed {
				t.Errorf("allowed = %v, want %v: %v", resp.Allowed, tt.allowed, resp.Result)
			}
			if cache.reads != tt.cacheReads || live.reads != tt.liveReads {
				t.Errorf("reads: %d from the cache, %d live; want %d and %d", cache.reads, live.reads, tt.cacheReads, tt.liveReads)
			}
		})
	}
}

func TestEndpointSliceHandlerErrors(t *testing.T) {
	c := legitimate()
	failing := &fakeReader{err: fmt.Errorf("connection refused")}
	h := &EndpointSliceHandler{Live: failing}
	if resp := h.Handle(context.Background(), sliceReview(t, c)); resp.Allowed || resp.Result.Code != 500 || !strings.Contains(resp.Result.Message, "reading pod shop/web-0") {
		t.Errorf("a failed read: %+v, want an error 500 naming the pod", resp.Result)
	}
	req := sliceReview(t, c)
	req.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "Endpoints"}
	if resp := h.Handle(context.Background(), req); resp.Allowed || resp.Result.Code != 400 {
		t.Errorf("a request for Endpoints: %+v, want an error 400", resp.Result)
	}
	req = sliceReview(t, c)
	req.Object.Raw = []byte(`{"endpoints": 1}`)
	if resp := h.Handle(context.Background(), req); resp.Allowed || resp.Result.Code != 400 {
		t.Errorf("a request that is not an EndpointSlice: %+v, want an error 400", resp.Result)
	}
}

// FuzzReviewEndpointSlice: the decision never panics, returns promptly,
// is deterministic, leaves its inputs alone, and lets through only what an
// elector may write: at most one endpoint, with one of the token's pod's
// IPs, into the slice of a Service without a selector that opted in to
// that pod's election, whose elector runs -leader-service for it.
//
//	go test -run '^$' -fuzz FuzzReviewEndpointSlice -fuzztime 5m -fuzzminimizetime 5s ./pkg/webhook/ (or make fuzz)
func FuzzReviewEndpointSlice(f *testing.F) {
	add := func(c sliceCase) {
		raw := func(v any) []byte {
			b, err := json.Marshal(v)
			if err != nil {
				f.Fatal(err)
			}
			return b
		}
		op := uint8(slices.Index([]admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete}, c.w.Operation))
		f.Add(raw(c.w.Slice), raw(c.w.Old), raw(c.pod), raw(c.svc), c.w.User.Username,
			strings.Join(c.w.User.Extra[ExtraPodName], ","), strings.Join(c.w.User.Extra[ExtraPodUID], ","), op)
	}
	add(legitimate())
	add(legitimate(asUpdate))
	add(legitimate(asUpdate, withdrawal))
	add(legitimate(func(c *sliceCase) {
		c.w.Slice.AddressType = discoveryv1.AddressTypeIPv6
		endpoint(c).Addresses = []string{"fd00::3"}
	}))
	add(legitimate(func(c *sliceCase) { endpoint(c).Addresses = []string{"10.0.0.1"} }))
	add(legitimate(func(c *sliceCase) { c.svc.Spec.Selector = map[string]string{"app": "web"} }))
	f.Fuzz(func(t *testing.T, rawSlice, rawOld, rawPod, rawSvc []byte, user, podName, podUID string, op uint8) {
		var c sliceCase
		c.w.Namespace = "shop"
		c.w.Operation = []admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect}[op%4]
		c.w.User = authenticationv1.UserInfo{Username: user, Extra: map[string]authenticationv1.ExtraValue{
			ExtraPodName: strings.Split(podName, ","), ExtraPodUID: strings.Split(podUID, ","),
		}}
		decode := func(raw []byte, out any) bool {
			return string(raw) != "null" && json.Unmarshal(raw, out) == nil
		}
		if s := (&discoveryv1.EndpointSlice{}); decode(rawSlice, s) {
			c.w.Slice = s
		}
		if s := (&discoveryv1.EndpointSlice{}); decode(rawOld, s) {
			c.w.Old = s
		}
		if p := (&corev1.Pod{}); decode(rawPod, p) {
			c.pod = p
		}
		if s := (&corev1.Service{}); decode(rawSvc, s) {
			c.svc = s
		}
		before := fmt.Sprintf("%#v %#v %#v %#v", c.w.Slice, c.w.Old, c.pod, c.svc)
		var err, again error
		within(t, "ReviewEndpointSlice", func() {
			err = ReviewEndpointSlice(c.w, c.pod, c.svc)
			again = ReviewEndpointSlice(c.w, c.pod, c.svc)
		})
		if fmt.Sprint(err) != fmt.Sprint(again) {
			t.Fatalf("not deterministic: %v / %v", err, again)
		}
		if after := fmt.Sprintf("%#v %#v %#v %#v", c.w.Slice, c.w.Old, c.pod, c.svc); after != before {
			t.Fatal("ReviewEndpointSlice modified its input")
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		s := c.w.Slice
		if c.w.Operation != admissionv1.Create && c.w.Operation != admissionv1.Update {
			t.Fatalf("allowed a %s", c.w.Operation)
		}
		if c.w.Operation == admissionv1.Update && c.w.Old.Labels[election.LabelManagedBy] != election.ManagedByElector {
			t.Fatalf("allowed taking over a slice managed by %q", c.w.Old.Labels[election.LabelManagedBy])
		}
		if !gocmp.Equal(s.Labels, map[string]string{election.LabelServiceName: s.Name, election.LabelManagedBy: election.ManagedByElector}) {
			t.Fatalf("allowed the labels %v", s.Labels)
		}
		if c.pod == nil || c.svc == nil || len(c.svc.Spec.Selector) > 0 || c.svc.Annotations[election.AnnotationElection] == "" ||
			user != "system:serviceaccount:shop:"+cmp.Or(c.pod.Spec.ServiceAccountName, "default") || string(c.pod.UID) != podUID || c.pod.Name != podName {
			t.Fatalf("allowed with pod %v, Service %v, user %q", c.pod, c.svc, user)
		}
		flags := ElectorFlags(ElectorContainer(c.pod).Args)
		if flags[election.FlagLeaderService] != s.Name || flags[election.FlagElection] != c.svc.Annotations[election.AnnotationElection] {
			t.Fatalf("allowed for an elector running %v, Service annotated %v", flags, c.svc.Annotations)
		}
		switch len(s.Endpoints) {
		case 0:
		case 1:
			ep := s.Endpoints[0]
			if len(ep.Addresses) != 1 || !slices.ContainsFunc(c.pod.Status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == ep.Addresses[0] }) {
				t.Fatalf("allowed the addresses %v for a pod with %v", ep.Addresses, c.pod.Status.PodIPs)
			}
			if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || ep.TargetRef.Name != c.pod.Name || ep.TargetRef.Namespace != "shop" {
				t.Fatalf("allowed the targetRef %v", ep.TargetRef)
			}
		default:
			t.Fatalf("allowed %d endpoints", len(s.Endpoints))
		}
	})
}
