package webhook

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// The extras of a service-account token bound to a pod: the pod's name and
// uid. The kubelet's projected tokens (the elector's, as the injector
// mounts it) carry them; a token from a TokenRequest without a pod, or from
// a Secret, does not.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// serviceAccountPrefix begins the user name of every service account's
// token: system:serviceaccount:<namespace>:<name>.
const serviceAccountPrefix = "system:serviceaccount:"

// SliceWrite is a write of an EndpointSlice by a restricted elector
// account, as the API server sends it to the webhook. The match conditions
// of the ValidatingWebhookConfiguration send only those by service
// accounts that hold the marker restricted on elector.vapor.io/
// leaderservices (granted with -leader-service), or that hold neither
// create nor update on the slice any longer (a forged grant, deleted
// while its request was on the way); never a wildcard holder's.
type SliceWrite struct {
	Operation admissionv1.Operation
	Namespace string
	User      authenticationv1.UserInfo
	// Slice is the slice written; Old the one it replaces, on UPDATE.
	Slice, Old *discoveryv1.EndpointSlice
}

// requester is who writes: a service account of the slice's namespace,
// with a token bound to one of its pods.
type requester struct {
	account string
	pod     string
	podUID  types.UID
}

// ReviewEndpointSlice decides whether w may go through: nil, or an error
// that names what is wrong and the fix. pod is the pod the request's token
// is bound to and svc the Service the slice is named after, as read when
// the request came; nil when they do not exist.
//
// An elector with -leader-service=S may write one EndpointSlice, named S,
// of the Service S in its own namespace, with its own pod's IP as the one
// endpoint or with none (a withdrawal), and only when:
//   - the token is its pod's own (a bound token: its pod-name and pod-uid
//     extras name a pod that exists with that uid, and runs as the
//     token's account);
//   - that pod's elector container runs with -leader-service=S (read as
//     the grant reconciler reads it: it is what the account was granted
//     for);
//   - the Service S exists, has no selector, and is annotated
//     elector.vapor.io/election with the election of that elector: the
//     Service's consent, without which nothing goes through but the
//     withdrawal of the pod's own address from a slice that lists it
//     alone;
//   - the slice is labelled and owned as an elector makes it, and on an
//     update replaces a slice an elector made: never another controller's.
//
// The endpoint's address must be one of the pod's IPs, of the slice's
// address family, and point at the pod: the right to write an EndpointSlice
// is the right to send a Service's traffic anywhere (CVE-2021-25740), and
// this is what narrows it to the pod's own address. A pod on the node's
// network, whose IP is the node's, or one that has finished, whose IP may
// have gone to another pod, lists none.
func ReviewEndpointSlice(w SliceWrite, pod *corev1.Pod, svc *corev1.Service) error {
	id, err := w.check()
	if err != nil {
		return err
	}
	s := w.Slice
	electionName, err := checkSlicePod(w, id, pod)
	if err != nil {
		return err
	}
	if len(s.Endpoints) == 0 && listsOnly(w.Old, pod.Name) {
		// Its own address leaving routes nothing anywhere, and needs no
		// consent of the Service, which may have been taken back since:
		// refused, it would keep the leader from releasing the lock.
		return nil
	}
	if err := checkSliceService(w.Namespace, s, svc, electionName, pod.Name); err != nil {
		return err
	}
	if len(s.Endpoints) == 1 {
		return checkLeaderEndpoint(s, &s.Endpoints[0], pod)
	}
	return nil
}

// check runs the checks that need no read, and returns who writes: the
// handler runs them before it reads anything, so that a request that
// cannot go through costs no request to the API server.
func (w SliceWrite) check() (requester, error) {
	id, err := w.requester()
	if err != nil {
		return id, err
	}
	if w.Operation != admissionv1.Create && w.Operation != admissionv1.Update {
		return id, fmt.Errorf("an elector's service account may only create and update its leader Service's EndpointSlice, not %s it",
			strings.ToLower(string(w.Operation)))
	}
	if w.Slice == nil {
		return id, errors.New("the request carries no EndpointSlice")
	}
	return id, errors.Join(w.checkShape(id)...)
}

// requester reads who writes from the request's user: a service account
// of the slice's namespace, with a token bound to a pod.
func (w SliceWrite) requester() (requester, error) {
	rest, ok := strings.CutPrefix(w.User.Username, serviceAccountPrefix)
	ns, account, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || account == "" {
		return requester{}, fmt.Errorf("user %q is not a service account; the elector injector's webhook checks only elector accounts' EndpointSlice writes",
			w.User.Username)
	}
	if ns != w.Namespace {
		return requester{}, fmt.Errorf("service account %s/%s may not write EndpointSlices in namespace %s: "+
			"an elector keeps the endpoints of a Service of its own namespace", ns, account, w.Namespace)
	}
	id := requester{account: account}
	pod, okPod := onlyExtra(w.User.Extra, ExtraPodName)
	uid, okUID := onlyExtra(w.User.Extra, ExtraPodUID)
	if !okPod || !okUID {
		return id, fmt.Errorf("the token of service account %s/%s is not bound to a pod (it has no %s and %s): "+
			"a leader Service's EndpointSlice is written with the elector's own projected service-account token, as the kubelet mounts it into the pod; "+
			"a token from a TokenRequest without a pod, or from a Secret, may not write it", ns, account, ExtraPodName, ExtraPodUID)
	}
	id.pod, id.podUID = pod, types.UID(uid)
	return id, nil
}

// onlyExtra returns the one non-empty value of key in extra.
func onlyExtra(extra map[string]authenticationv1.ExtraValue, key string) (string, bool) {
	v := extra[key]
	if len(v) != 1 || v[0] == "" {
		return "", false
	}
	return v[0], true
}

// checkShape checks the slice as an elector writes it, for what needs no
// read: its name, labels, annotations, owner, and the form of its
// endpoint.
func (w SliceWrite) checkShape(id requester) []error {
	s := w.Slice
	name := s.Name
	if name == "" {
		return []error{errors.New("the EndpointSlice has no name: a leader Service's slice is named after its Service (metadata.name, not generateName)")}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("EndpointSlice %s: "+format, append([]any{name}, args...)...))
	}

	// 1. Labelled as an elector labels it: the Service it belongs to, and
	// managed-by, which keeps the EndpointSlice controllers off it.
	if v := s.Labels[election.LabelServiceName]; v != name {
		fail("label %s is %q: it must be the slice's own name, which is its Service's", election.LabelServiceName, v)
	}
	if v := s.Labels[election.LabelManagedBy]; v != election.ManagedByElector {
		fail("label %s is %q: it must be %s", election.LabelManagedBy, v, election.ManagedByElector)
	}
	if extra := otherKeys(s.Labels, election.LabelServiceName, election.LabelManagedBy); len(extra) > 0 {
		fail("labels %s: an elector's slice carries only %s and %s; remove them", strings.Join(extra, ", "), election.LabelServiceName, election.LabelManagedBy)
	}
	if extra := otherKeys(s.Annotations, election.AnnotationEpoch); len(extra) > 0 {
		fail("annotations %s: an elector's slice carries only %s; remove them", strings.Join(extra, ", "), election.AnnotationEpoch)
	}
	if len(s.Finalizers) > 0 {
		fail("finalizers %s: an elector's slice has none; remove them", strings.Join(s.Finalizers, ", "))
	}

	// 2. Owned by its Service, or by nothing: the Service's uid is
	// checked once it is read.
	switch {
	case len(s.OwnerReferences) > 1:
		fail("%d ownerReferences: an elector's slice has one, its Service, or none", len(s.OwnerReferences))
	case len(s.OwnerReferences) == 1:
		ref := s.OwnerReferences[0]
		if ref.APIVersion != "v1" || ref.Kind != "Service" || ref.Name != name {
			fail("ownerReference %s %s %s: the one owner an elector's slice may have is its Service, apiVersion v1, kind Service, name %s",
				ref.APIVersion, ref.Kind, ref.Name, name)
		}
		if isTrue(ref.Controller) || isTrue(ref.BlockOwnerDeletion) {
			fail("ownerReference to Service %s: controller and blockOwnerDeletion must not be set", name)
		}
	}

	// 3. Never another controller's slice.
	if w.Operation == admissionv1.Update {
		switch {
		case w.Old == nil:
			fail("the update carries no old object to check")
		case w.Old.Labels[election.LabelManagedBy] != election.ManagedByElector:
			fail("it is managed by %q, not by an elector (label %s): an elector does not take over another controller's slice; "+
				"delete the slice for the elector to make its own, or give the elector another Service",
				w.Old.Labels[election.LabelManagedBy], election.LabelManagedBy)
		}
	}

	// 4. One endpoint at most, the leader's pod, as the elector writes it;
	// its address is checked against the pod once it is read.
	if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
		fail("addressType %q: it must be IPv4 or IPv6, the family of the pod's IP", s.AddressType)
	}
	if len(s.Endpoints) > 1 {
		fail("it lists %d endpoints: a leader Service's slice lists one, the leader's pod, or none", len(s.Endpoints))
		return errs
	}
	for _, ep := range s.Endpoints {
		if len(ep.Addresses) != 1 {
			fail("its endpoint has %d addresses: it must have one, the leader pod's IP", len(ep.Addresses))
		}
		if ep.Hostname != nil {
			fail("its endpoint has the hostname %q: an elector's endpoint has none", *ep.Hostname)
		}
		if ep.Zone != nil || ep.Hints != nil || len(ep.DeprecatedTopology) > 0 {
			fail("its endpoint has a zone, hints or topology: an elector's endpoint has none")
		}
		ref := ep.TargetRef
		switch {
		case ref == nil:
			fail("its endpoint has no targetRef: it must name pod %s, the token's", id.pod)
		case ref.Kind != "Pod" || ref.Namespace != w.Namespace || ref.Name != id.pod ||
			(ref.APIVersion != "" && ref.APIVersion != "v1") || ref.FieldPath != "":
			fail("its endpoint's targetRef is %s %s/%s: it must be Pod %s/%s, the pod the token is bound to",
				ref.Kind, ref.Namespace, ref.Name, w.Namespace, id.pod)
		}
	}
	return errs
}

// listsOnly reports whether old lists one endpoint, pod's.
func listsOnly(old *discoveryv1.EndpointSlice, pod string) bool {
	if old == nil || len(old.Endpoints) != 1 {
		return false
	}
	ref := old.Endpoints[0].TargetRef
	return ref != nil && ref.Kind == "Pod" && ref.Namespace == old.Namespace && ref.Name == pod
}

// checkSlicePod checks the pod the token is bound to, and returns the
// election of its elector.
func checkSlicePod(w SliceWrite, id requester, pod *corev1.Pod) (string, error) {
	name := w.Slice.Name
	switch {
	case pod == nil:
		return "", fmt.Errorf("pod %s/%s, which the token is bound to, does not exist", w.Namespace, id.pod)
	case pod.Name != id.pod || pod.Namespace != w.Namespace:
		return "", fmt.Errorf("pod %s/%s is not the pod the token is bound to, %s/%s", pod.Namespace, pod.Name, w.Namespace, id.pod)
	case pod.UID != id.podUID:
		return "", fmt.Errorf("pod %s/%s is not the pod the token is bound to (uid %s, the token's %s): a token of a pod that was deleted",
			w.Namespace, id.pod, pod.UID, id.podUID)
	}
	if sa := cmp.Or(pod.Spec.ServiceAccountName, "default"); sa != id.account {
		return "", fmt.Errorf("pod %s runs as service account %s, not %s, the token's", pod.Name, sa, id.account)
	}
	c := ElectorContainer(pod)
	if c == nil {
		return "", fmt.Errorf("pod %s has no %s container: only an elector with -%s=%s may write EndpointSlice %s; annotate the pod (its template) %s=%s",
			pod.Name, ContainerName, election.FlagLeaderService, name, name, AnnotationLeaderService, name)
	}
	flags := ElectorFlags(c.Args)
	if v, ok := flags[election.FlagLeaderService]; !ok || v != name {
		runs := "without -" + election.FlagLeaderService
		if ok {
			runs = fmt.Sprintf("with -%s=%s", election.FlagLeaderService, v)
		}
		return "", fmt.Errorf("pod %s's elector runs %s, and may not write EndpointSlice %s; "+
			"annotate the pod (its template) %s=%s for it to keep that Service's endpoints",
			pod.Name, runs, name, AnnotationLeaderService, name)
	}
	electionName := flags[election.FlagElection]
	if err := election.ValidateName(electionName); err != nil {
		return "", fmt.Errorf("pod %s's elector has no valid -%s: %w", pod.Name, election.FlagElection, err)
	}
	if pod.Spec.HostNetwork {
		return "", fmt.Errorf("pod %s runs on the node's network, so its IP is the node's: "+
			"an elector's account may not route a Service to a node; run the pod without hostNetwork", pod.Name)
	}
	return electionName, nil
}

// checkSliceService checks that the Service consents to the election's
// leader keeping its endpoints, and owns the slice if anything does.
func checkSliceService(ns string, s *discoveryv1.EndpointSlice, svc *corev1.Service, electionName, pod string) error {
	name := s.Name
	optIn := fmt.Sprintf("annotate Service %s with %s=%s", name, election.AnnotationElection, electionName)
	switch {
	case svc == nil:
		return fmt.Errorf("the Service %s does not exist in namespace %s: create it with no selector and %s", name, ns, optIn)
	case len(svc.Spec.Selector) > 0:
		return fmt.Errorf("the Service %s has a selector, so its endpoints are the EndpointSlice controller's: "+
			"remove spec.selector for the leader alone to be its endpoint", name)
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return fmt.Errorf("the Service %s is of type ExternalName, which has no endpoints: make it a ClusterIP Service", name)
	}
	v, ok := svc.Annotations[election.AnnotationElection]
	switch {
	case !ok:
		return fmt.Errorf("the Service %s has not opted in to leader-only routing: %s, for the leader of that election (pod %s's) to keep its endpoints",
			name, optIn, pod)
	case v != electionName:
		return fmt.Errorf("the Service %s routes to the leader of election %q, not of %q, pod %s's: %s, or give the pod's elector another Service",
			name, v, electionName, pod, optIn)
	}
	for _, ref := range s.OwnerReferences {
		if ref.UID != svc.UID {
			return fmt.Errorf("EndpointSlice %s: its ownerReference names Service %s with uid %q, and the Service's uid is %s: "+
				"leave the ownerReference out, or give the Service's uid", name, name, ref.UID, svc.UID)
		}
	}
	return nil
}

// checkLeaderEndpoint checks the one endpoint against the pod: its own IP,
// of the slice's family, pointing at it.
func checkLeaderEndpoint(s *discoveryv1.EndpointSlice, ep *discoveryv1.Endpoint, pod *corev1.Pod) error {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return fmt.Errorf("pod %s has finished (phase %s), and its IP may be another pod's by now: it may only remove its address from EndpointSlice %s",
			pod.Name, pod.Status.Phase, s.Name)
	}
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	addr := ep.Addresses[0]
	if !slices.Contains(ips, addr) {
		if len(ips) == 0 {
			return fmt.Errorf("EndpointSlice %s lists %s, and pod %s has no IP yet: the leader lists its own pod's IP, once the pod has one",
				s.Name, addr, pod.Name)
		}
		return fmt.Errorf("EndpointSlice %s lists %s, which is not an IP of pod %s (%s): "+
			"the leader lists its own pod's IP alone, as the downward API gives it (status.podIP)",
			s.Name, addr, pod.Name, strings.Join(ips, ", "))
	}
	ip, err := netip.ParseAddr(addr)
	family := discoveryv1.AddressTypeIPv4
	if err == nil && !ip.Is4() {
		family = discoveryv1.AddressTypeIPv6
	}
	if err != nil || family != s.AddressType {
		return fmt.Errorf("EndpointSlice %s has addressType %s, and lists %s, an %s address: set addressType %s", s.Name, s.AddressType, addr, family, family)
	}
	if uid := ep.TargetRef.UID; uid != "" && uid != pod.UID {
		return fmt.Errorf("EndpointSlice %s: its endpoint's targetRef has uid %s, and pod %s's is %s: leave it out, or give the pod's",
			s.Name, uid, pod.Name, pod.UID)
	}
	if ep.NodeName != nil && *ep.NodeName != pod.Spec.NodeName {
		return fmt.Errorf("EndpointSlice %s: its endpoint's nodeName is %q, and pod %s runs on %q: leave it out, or give the pod's node",
			s.Name, *ep.NodeName, pod.Name, pod.Spec.NodeName)
	}
	return nil
}

// otherKeys returns the keys of m other than allowed, sorted.
func otherKeys(m map[string]string, allowed ...string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, k) {
			out = append(out, k)
		}
	}
	return out
}

func isTrue(b *bool) bool { return b != nil && *b }

// EndpointSlicePath is where the injector serves EndpointSliceHandler; the
// ValidatingWebhookConfiguration in config/webhook names it.
const EndpointSlicePath = "/validate-endpointslice"

// EndpointSliceHandler is the injector's validating admission webhook for
// EndpointSlices: it reads the pod and the Service a write concerns, and
// hands them to ReviewEndpointSlice, which decides.
type EndpointSliceHandler struct {
	// Cache reads pods from the manager's cache, which holds injected
	// pods, trimmed to what the reconciler and this handler read (see
	// grants.CacheByObject); nil reads every pod live.
	Cache client.Reader
	// Live reads from the API server: a pod the cache lacks, or holds with
	// another uid or without the address written (a pod given its IP a
	// moment ago), and every Service. Services are not cached: their
	// writes are rare, and a cache would hold every Service of the cluster.
	Live client.Reader
}

var _ admission.Handler = (*EndpointSliceHandler)(nil)

// endpointSliceKind is the only kind the webhook's rules send.
var endpointSliceKind = metav1.GroupVersionKind{Group: discoveryv1.GroupName, Version: "v1", Kind: "EndpointSlice"}

// cacheWait bounds a read from the cache: one whose pod informer has not
// synced yet (a replica just started) is read live instead, well within
// the webhook's 5s timeout.
const cacheWait = time.Second

// Handle answers one admission request: allowed or denied as
// ReviewEndpointSlice decides, an error 400 for a request that is not an
// EndpointSlice, and an error 500 when a read fails or anything panics (the
// API server then refuses the write: the failure policy is Fail).
func (h *EndpointSliceHandler) Handle(ctx context.Context, req admission.Request) (resp admission.Response) {
	log := logf.FromContext(ctx)
	defer recoverInternal(log, "EndpointSlice webhook panicked", &resp)
	w, err := decodeSliceWrite(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decoding the EndpointSlice: %w", err))
	}
	deny := func(err error) admission.Response {
		log.V(1).Info("Denied an EndpointSlice write", "namespace", req.Namespace, "name", req.Name, "user", req.UserInfo.Username, "reason", err.Error())
		return admission.Denied(err.Error())
	}
	id, err := w.check()
	if err != nil {
		return deny(err)
	}
	addr := ""
	if len(w.Slice.Endpoints) == 1 {
		addr = w.Slice.Endpoints[0].Addresses[0]
	}
	pod, err := h.pod(ctx, w.Namespace, id, addr)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading pod %s/%s, which the token is bound to: %w", w.Namespace, id.pod, err))
	}
	svc := &corev1.Service{}
	if err := h.Live.Get(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.Slice.Name}, svc); apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading Service %s/%s: %w", w.Namespace, w.Slice.Name, err))
	}
	if err := ReviewEndpointSlice(w, pod, svc); err != nil {
		return deny(err)
	}
	return admission.Allowed("")
}

// pod reads the pod the token is bound to from the cache, or live when the
// cache lacks it, holds another pod of that name, or holds it without addr
// among its IPs; nil when it does not exist.
func (h *EndpointSliceHandler) pod(ctx context.Context, ns string, id requester, addr string) (*corev1.Pod, error) {
	key := types.NamespacedName{Namespace: ns, Name: id.pod}
	if h.Cache != nil {
		cctx, cancel := context.WithTimeout(ctx, cacheWait)
		pod := &corev1.Pod{}
		err := h.Cache.Get(cctx, key, pod)
		cancel()
		if err == nil && pod.UID == id.podUID && (addr == "" || slices.ContainsFunc(pod.Status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == addr })) {
			return pod, nil
		}
	}
	pod := &corev1.Pod{}
	if err := h.Live.Get(ctx, key, pod); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return pod, nil
}

// decodeSliceWrite reads the request's EndpointSlices with the JSON
// decoder the API machinery uses.
func decodeSliceWrite(req admission.Request) (SliceWrite, error) {
	if req.Kind != endpointSliceKind {
		return SliceWrite{}, fmt.Errorf("the request is for %s, not a discovery.k8s.io/v1 EndpointSlice; the webhook's rules must send only EndpointSlices",
			req.Kind.String())
	}
	w := SliceWrite{Operation: req.Operation, Namespace: req.Namespace, User: req.UserInfo}
	for _, o := range []struct {
		raw []byte
		out **discoveryv1.EndpointSlice
	}{{req.Object.Raw, &w.Slice}, {req.OldObject.Raw, &w.Old}} {
		if len(o.raw) == 0 {
			continue
		}
		s := &discoveryv1.EndpointSlice{}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(o.raw, s); err != nil {
			return SliceWrite{}, err
		}
		*o.out = s
	}
	return w, nil
}
