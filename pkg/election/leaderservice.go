package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
)

// leaderService keeps the endpoints of a selector-less Service listing the
// leader alone (-leader-service): one EndpointSlice, named for the Service,
// with this participant's pod as its only endpoint while it leads.
//
// Every write replaces the whole list with at most one address, so the
// slice never lists two; and every write is a compare-and-swap over the
// version just read, sent only if this participant still leads once that
// read is answered. A leader that has lost the lock without knowing it
// stops calling itself leader a renew deadline after its last renewal,
// before anyone else may take the lock, let alone write the slice: so a
// write of its address that is still in flight when the next leader's
// lands is refused as a conflict, and never undoes it. A missing slice is
// made empty first, for the same reason: a create has no precondition.
// The epoch written beside the address says which term wrote it; it
// decides nothing, so that a bad one written by hand cannot keep every
// later leader out.
//
// While it leads, the slice is written over whenever it differs from what
// this leader would write (read again every TTL): an address beside its
// own, a condition or a label changed by hand.
//
// A leader that releases the lock removes its address first (withdrawNow),
// so the Service sends nothing to a pod that no longer leads, and releases
// nothing if it cannot: the others then take over when its lease runs out,
// and the next leader's address replaces its own. One that loses the lock
// removes its address when it can, unless the next leader has replaced it
// already. A leader is written in as soon as it leads, so the
// Service has no endpoint for the time of a handover, and never two.
type leaderService struct {
	discovery rest.Interface
	core      rest.Interface
	namespace string
	// name is the Service's, and its slice's.
	name string
	// pod and ip are this participant's pod and its IP.
	pod, ip string
	// leads reports whether this participant leads, judged now, and the
	// epoch of its term.
	leads func() (bool, uint64)
	// resync is how often a leader checks that the slice still lists it.
	resync  time.Duration
	log     logr.Logger
	metrics *Metrics

	// writing is held by the one sync that reads and writes at a time
	// (see lock): a release's withdrawal waits for a publication in
	// flight, then undoes it, but no longer than its deadline.
	writing chan struct{}
	mu      sync.Mutex
	want    bool // list this pod's address
	// stopBackground cancels the background write under way, if any.
	stopBackground context.CancelFunc
	kick           chan struct{}
	// svc is the Service as last read (while writing): a new leader
	// writes its address from it, and reads it again after, so that a
	// handover waits on two requests, not three.
	svc *coreService
}

func newLeaderService(clients *Clients, cfg Config, leads func() (bool, uint64), log logr.Logger, metrics *Metrics) *leaderService {
	return &leaderService{
		discovery: clients.Discovery, core: clients.Core,
		namespace: cfg.Namespace, name: cfg.LeaderService, pod: cfg.PodName, ip: cfg.PodIP,
		leads: leads, resync: cfg.TTL, log: log.WithValues("service", cfg.LeaderService), metrics: metrics,
		kick: make(chan struct{}, 1), writing: make(chan struct{}, 1),
	}
}

// lock takes the right to read and write, or gives up when ctx ends.
func (s *leaderService) lock(ctx context.Context) error {
	select {
	case s.writing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Service's endpoints to be written: %w", ctx.Err())
	}
}

func (s *leaderService) unlock() { <-s.writing }

// publish asks for this pod to be the Service's endpoint; withdraw for its
// address to leave. Both are written in the background, and retried.
func (s *leaderService) publish()  { s.set(true) }
func (s *leaderService) withdraw() { s.set(false) }

func (s *leaderService) set(want bool) {
	s.mu.Lock()
	s.want = want
	s.mu.Unlock()
	poke(s.kick)
}

// withdrawNow removes this pod's address before it returns, or gives up
// when ctx ends: a releasing leader calls it before the release, and
// releases nothing if it fails.
func (s *leaderService) withdrawNow(ctx context.Context) error {
	s.set(false)
	// A background write held up (a slow API server) would hold the
	// withdrawal past its deadline: it is given up, and the withdrawal
	// reads what it may have written.
	s.mu.Lock()
	if s.stopBackground != nil {
		s.stopBackground()
	}
	s.mu.Unlock()
	return s.sync(ctx)
}

// run writes what is wanted until ctx is done, retrying failures with a
// backoff of up to ten seconds. While this participant leads, it reads the
// slice and the Service again every resync, and writes the slice again if
// someone has changed or deleted it, or the Service's ports have changed:
// nothing else would until the next handover.
func (s *leaderService) run(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	_ = s.background(ctx, func(ctx context.Context) error { s.prefetch(ctx); return nil })
	resync := time.NewTimer(s.resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-resync.C:
			if !s.wanted() {
				resync.Reset(s.resync)
				continue
			}
			// Its ports may have changed too.
			if s.lock(ctx) != nil {
				return
			}
			s.svc = nil
			s.unlock()
		}
		if ctx.Err() != nil {
			return
		}
		err := s.background(ctx, s.sync)
		resync.Reset(s.resync)
		if err == nil {
			backoff = minBackoff
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Error(err, "could not write the Service's endpoints; retrying", "in", backoff)
		backoff = sleep(ctx, backoff, maxBackoff)
		s.set(s.wanted())
	}
}

// background runs f (a sync), unless withdrawNow cancels it.
func (s *leaderService) background(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.stopBackground = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.stopBackground = nil
		s.mu.Unlock()
	}()
	err := f(ctx)
	if ctx.Err() != nil && err != nil {
		// Given up for a withdrawal, which does what is wanted now.
		return nil
	}
	return err
}

// prefetch reads the Service before this participant may lead, so that
// its first publication needs no read of it, and says at start what is
// wrong with it.
func (s *leaderService) prefetch(ctx context.Context) {
	if s.lock(ctx) != nil {
		return
	}
	defer s.unlock()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.service(rctx); err != nil && ctx.Err() == nil {
		s.metrics.apiError("service")
		s.log.Error(err, "the Service cannot route to the leader yet; its endpoints are written once it can")
	}
}

func (s *leaderService) wanted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.want
}

// sync brings the slice in line with what is wanted: this pod listed while
// it leads, and not listed otherwise. A conflict (another writer between
// the read and the write) is read again at once.
func (s *leaderService) sync(ctx context.Context) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.unlock()
	for {
		err := s.syncOnce(ctx)
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		if err != nil {
			s.metrics.apiError("service")
			// Read the Service again for the retry: it may have been
			// made again, with a new uid, since it was read.
			s.svc = nil
		}
		return err
	}
}

func (s *leaderService) syncOnce(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var slice endpointSlice
	err := s.discovery.Get().Namespace(s.namespace).Resource("endpointslices").Name(s.name).Do(rctx).Into(&slice)
	missing := apierrors.IsNotFound(err)
	if err != nil && !missing {
		return fmt.Errorf("read EndpointSlice %s: %w", s.name, err)
	}
	if !missing && slice.Labels[LabelManagedBy] != ManagedByElector {
		// Someone else's: never the elector's to rewrite, nor to withdraw
		// from.
		if !s.wanted() {
			return nil
		}
		return fmt.Errorf("EndpointSlice %s is not the elector's (its label %s is %q, not %q): delete it, or name another Service with -%s",
			s.name, LabelManagedBy, slice.Labels[LabelManagedBy], ManagedByElector, FlagLeaderService)
	}
	listed := !missing && s.lists(&slice)
	if !s.wanted() {
		if !listed {
			return nil
		}
		return s.empty(rctx, &slice)
	}

	leads, epoch := s.leads()
	if !leads {
		return nil
	}
	svc, fresh := s.svc, s.svc == nil
	if fresh {
		if svc, err = s.service(rctx); err != nil {
			if refused := (serviceRefusal{}); listed && errors.As(err, &refused) {
				// A Service that may route to this pod no more (a
				// selector, say): its address leaves, lest the Service
				// send to it beside the pods it selects.
				err = errors.Join(err, s.empty(rctx, &slice))
			}
			return err
		}
	}
	ports, err := slicePorts(svc)
	if err != nil {
		return err
	}
	if missing {
		// Made empty, then written with a compare-and-swap like any
		// update: a create has no precondition, and one held up on the
		// way could land after the slice was deleted again, long after
		// this participant stopped leading.
		slice = endpointSlice{rawObject{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace}, fields: map[string]json.RawMessage{}}}
		if err := s.setFields(&slice, nil, ports); err != nil {
			return err
		}
		s.own(&slice, svc, 0)
		if err := s.discovery.Post().Namespace(s.namespace).Resource("endpointslices").Body(&slice).Do(rctx).Error(); err != nil {
			return err
		}
		return errRetry
	}
	if t := addressTypeOf(&slice); t != "" && t != s.addressType() {
		return fmt.Errorf("EndpointSlice %s holds %s addresses, and this pod's IP %s is %s, which its addressType, fixed at creation, cannot change to: "+
			"delete the slice for the leader to make it again", s.name, t, s.ip, s.addressType())
	}
	want := endpointSlice{slice.deepCopy()}
	if err := s.fill(&want, svc, ports, epoch); err != nil {
		return err
	}
	if same, err := sameJSON(&want, &slice); err != nil || same {
		// It is as this leader would write it: anything else (an address
		// beside its own, a label taken off, a condition) is written over.
		return err
	}
	// Judged once the reads are answered: a write sent by a participant
	// that no longer leads could land after the next leader's, were it
	// not for the compare-and-swap over the version just read.
	if leads, _ := s.leads(); !leads {
		return nil
	}
	if err := s.discovery.Put().Namespace(s.namespace).Resource("endpointslices").Name(s.name).Body(&want).Do(rctx).Error(); err != nil {
		return err
	}
	s.log.Info("the Service routes to this pod", "ip", s.ip, "epoch", epoch)
	if !fresh {
		// Written from the Service as read before: read it again, and
		// write again if its ports or identity have changed since.
		now, err := s.service(rctx)
		if err != nil {
			return err
		}
		if now.UID != svc.UID || !slices.Equal(mustPorts(now), ports) {
			return errRetry
		}
	}
	return nil
}

// errRetry asks sync to read the slice again at once: a Conflict, as when
// another writer came between the read and the write.
var errRetry = apierrors.NewConflict(discoveryV1.WithResource("endpointslices").GroupResource(), "", errors.New("read it again"))

// empty writes slice, as read, without endpoints: this pod's address leaves.
func (s *leaderService) empty(ctx context.Context, slice *endpointSlice) error {
	slice.fields["endpoints"] = json.RawMessage("[]")
	s.own(slice, s.svc, 0)
	err := s.discovery.Put().Namespace(s.namespace).Resource("endpointslices").Name(s.name).Body(slice).Do(ctx).Error()
	if err == nil {
		s.log.Info("removed the pod's address from the Service", "ip", s.ip)
	}
	return err
}

// sameJSON reports whether a and b encode alike.
func sameJSON(a, b *endpointSlice) (bool, error) {
	ja, err := json.Marshal(a)
	if err != nil {
		return false, err
	}
	jb, err := json.Marshal(b)
	return string(ja) == string(jb), err
}

// addressTypeOf is slice's addressType, "" if unreadable.
func addressTypeOf(slice *endpointSlice) string {
	var t string
	_ = json.Unmarshal(slice.fields["addressType"], &t)
	return t
}

// mustPorts is slicePorts, nil for a Service it refuses.
func mustPorts(svc *coreService) []slicePort {
	ports, _ := slicePorts(svc)
	return ports
}

// lists reports whether slice lists this pod: its IP, pointing at it. An
// endpoint with its IP that points elsewhere (a pod on the node's network
// beside it shares the IP) is another's.
func (s *leaderService) lists(slice *endpointSlice) bool {
	var eps []sliceEndpoint
	if err := json.Unmarshal(slice.fields["endpoints"], &eps); err != nil {
		// Unreadable: replaced by the next write either way; a
		// withdrawal writes it empty.
		return true
	}
	for _, ep := range eps {
		if ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" || ep.TargetRef.Name != s.pod {
			continue
		}
		if slices.Contains(ep.Addresses, s.ip) {
			return true
		}
	}
	return false
}

// serviceRefusal is a Service that an elector may not route to as it is,
// as opposed to one that could not be read.
type serviceRefusal struct{ error }

// service reads the Service and checks that an elector may keep its
// endpoints.
func (s *leaderService) service(ctx context.Context) (*coreService, error) {
	var svc coreService
	err := s.core.Get().Namespace(s.namespace).Resource("services").Name(s.name).Do(ctx).Into(&svc)
	switch {
	case apierrors.IsNotFound(err):
		return nil, serviceRefusal{fmt.Errorf("service %s not found: create it with no selector, annotated %s=<this election>", s.name, AnnotationElection)}
	case err != nil:
		return nil, fmt.Errorf("read Service %s: %w", s.name, err)
	case len(svc.Spec.Selector) > 0:
		return nil, serviceRefusal{fmt.Errorf("service %s has a selector, so its endpoints are the EndpointSlice controller's: "+
			"remove spec.selector for the elector to keep them", s.name)}
	case svc.Spec.Type == "ExternalName":
		return nil, serviceRefusal{fmt.Errorf("service %s is of type ExternalName, which has no endpoints: use ClusterIP", s.name)}
	}
	s.svc = &svc
	return &svc, nil
}

// fill makes slice list this pod alone, for svc's ports.
func (s *leaderService) fill(slice *endpointSlice, svc *coreService, ports []slicePort, epoch uint64) error {
	yes, no := true, false
	ep := sliceEndpoint{
		Addresses:  []string{s.ip},
		Conditions: endpointConditions{Ready: &yes, Serving: &yes, Terminating: &no},
		TargetRef:  &objectReference{Kind: "Pod", Namespace: s.namespace, Name: s.pod},
	}
	if err := s.setFields(slice, []sliceEndpoint{ep}, ports); err != nil {
		return err
	}
	s.own(slice, svc, epoch)
	return nil
}

// setFields writes the slice's addressType, endpoints and ports.
func (s *leaderService) setFields(slice *endpointSlice, eps []sliceEndpoint, ports []slicePort) error {
	if slice.fields == nil {
		slice.fields = map[string]json.RawMessage{}
	}
	if eps == nil {
		eps = []sliceEndpoint{}
	}
	for field, v := range map[string]any{"addressType": s.addressType(), "endpoints": eps, "ports": ports} {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		slice.fields[field] = raw
	}
	return nil
}

// addressType is the address family of this pod's IP, as an EndpointSlice
// names it.
func (s *leaderService) addressType() string {
	if ip := net.ParseIP(s.ip); ip != nil && ip.To4() == nil {
		return "IPv6"
	}
	return "IPv4"
}

// own gives slice the metadata of an elector's slice, and nothing else, as
// the injector's webhook admits it: the labels that tie it to the Service
// and keep the EndpointSlice controllers off it; the epoch of the term that
// wrote it (the one it carries when epoch is 0); and its Service as its one
// owner, so that it is deleted with the Service, when svc is known (the
// owner it has otherwise). A label or annotation added by hand, or the
// owner of a Service deleted and made again, would have every write
// refused, a withdrawal included.
func (s *leaderService) own(slice *endpointSlice, svc *coreService, epoch uint64) {
	slice.Labels = map[string]string{LabelServiceName: s.name, LabelManagedBy: ManagedByElector}
	kept := slice.Annotations[AnnotationEpoch]
	slice.Annotations = nil
	if epoch != 0 {
		kept = strconv.FormatUint(epoch, 10)
	}
	if kept != "" {
		slice.Annotations = map[string]string{AnnotationEpoch: kept}
	}
	slice.Finalizers = nil
	if svc != nil {
		slice.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID}}
	}
}

// slicePorts are the slice's ports for svc: each of the Service's ports by
// name, at its target port. A selector-less Service's target port cannot
// be a container port's name: there is no pod to look it up in.
func slicePorts(svc *coreService) ([]slicePort, error) {
	if len(svc.Spec.Ports) == 0 {
		return nil, fmt.Errorf("service %s has no ports: add the port the application serves on", svc.Name)
	}
	ports := make([]slicePort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		port := p.Port
		switch {
		case p.TargetPort.Type == intstr.String:
			return nil, fmt.Errorf("service %s: port %q has the targetPort %q, a name, which a Service without a selector cannot resolve: give the number",
				svc.Name, p.Name, p.TargetPort.StrVal)
		case p.TargetPort.IntVal != 0:
			port = p.TargetPort.IntVal
		}
		protocol := p.Protocol
		if protocol == "" {
			protocol = "TCP"
		}
		ports = append(ports, slicePort{Name: p.Name, Port: port, Protocol: protocol, AppProtocol: p.AppProtocol})
	}
	return ports, nil
}

// validatePodIP checks the pod IP that -leader-service lists.
func validatePodIP(ip string) error {
	if ip == "" {
		return errors.New("is required by -" + FlagLeaderService + ": set $" + EnvPodIP + " from the downward API (status.podIP)")
	}
	addr := net.ParseIP(ip)
	switch {
	case addr == nil:
		return fmt.Errorf("%q is not an IP address", ip)
	case addr.To4() != nil && strings.Contains(ip, ":"):
		return fmt.Errorf("%q is an IPv4-mapped IPv6 address, which an EndpointSlice refuses: give the IPv4 address", ip)
	case addr.IsLoopback(), addr.IsUnspecified(), addr.IsLinkLocalUnicast(), addr.IsMulticast(), addr.IsLinkLocalMulticast(), addr.IsInterfaceLocalMulticast():
		return fmt.Errorf("%q is a loopback, link-local, multicast or unspecified address, which an EndpointSlice refuses: "+
			"give the pod's IP (status.podIP)", ip)
	}
	return nil
}
