package election

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// object is a Kubernetes object the lock can live on.
type object interface {
	runtime.Object
	metav1.Object
}

// observation is one version of the lock object and the record it holds.
// An observation with no object records that the object was deleted: its
// record is the last one seen, so the lease it named still runs out before
// anyone may take the lock.
type observation struct {
	record Record
	object object
	// readErr is set when the object holds a record that cannot be read
	// (written by hand, say): it counts as held by an unknown leader.
	readErr error
	// epoch is the epoch of the record's term, 0 if none is written.
	epoch uint64
}

// sameVersion reports whether o and other are the same version of the lock
// object. Any write makes a new version, and a follower restarts its wait
// on every new version, not only on a different record: a record written
// again as it was before (by hand, A then B then A) is still a write, and a
// follower that missed B must not take it for the A it saw long ago.
func (o *observation) sameVersion(other *observation) bool {
	if o.object == nil || other.object == nil {
		return o.object == nil && other.object == nil
	}
	return o.object.GetUID() == other.object.GetUID() &&
		o.object.GetResourceVersion() == other.object.GetResourceVersion()
}

// lockKind is what differs between lock types: where the record is kept.
type lockKind struct {
	resource  string
	gvk       schema.GroupVersionKind
	newObject func() object
	read      func(object) (Record, error)
	write     func(object, Record) error
}

// recordLock reads and writes the election record on one object, always
// with a compare-and-swap on the resourceVersion it last saw.
type recordLock struct {
	client    rest.Interface
	namespace string
	name      string
	kind      lockKind
	// holderPod, when set, is written into AnnotationHolderPod with every
	// record this participant writes as holder, so that the next leader
	// knows which pod to label standby whatever the participants' IDs.
	holderPod string
	// noEpoch is set once a write was refused with the epoch annotation
	// and landed without it: an admission policy from before the epoch
	// (see update). Only the election's loop writes.
	noEpoch bool
	// onNoEpoch is told when noEpoch is set.
	onNoEpoch func(error)
}

// newRecordLock returns the lock of the given type for the election name in
// namespace.
func newRecordLock(lockType LockType, clients *Clients, namespace, name string) (*recordLock, error) {
	l := &recordLock{namespace: namespace, name: name}
	switch lockType {
	case LockLeases:
		l.client, l.kind = clients.Coordination, leaseKind
	case LockConfigMaps:
		l.client, l.kind = clients.Core, configMapKind
	case LockEndpoints:
		l.client, l.kind = clients.Core, endpointsKind
	default:
		_, err := ParseLockType(string(lockType))
		return nil, err
	}
	return l, nil
}

// String names the lock object for logs: leases/default/example.
func (l *recordLock) String() string {
	return l.kind.resource + "/" + l.namespace + "/" + l.name
}

// observe reads the record of one version of the lock object. A record that
// cannot be read is kept as readErr rather than returned as an error: that
// version is still the newest, and it must be timed like any other.
func (l *recordLock) observe(obj object) *observation {
	rec, err := l.kind.read(obj)
	if err != nil {
		return &observation{object: obj, readErr: fmt.Errorf("%s: %w", l, err)}
	}
	return &observation{record: rec, object: obj, epoch: epochOf(obj.GetAnnotations(), rec)}
}

// holderPodOf is the pod of the holder of obs: the one its holder wrote
// down, or else its ID, which is the pod name by default.
func (l *recordLock) holderPodOf(obs *observation) string {
	if pod := obs.object.GetAnnotations()[AnnotationHolderPod]; pod != "" {
		return pod
	}
	return obs.record.HolderIdentity
}

// write puts rec, the epoch of its term (none for 0), and this
// participant's pod while it holds the lock, into obj.
func (l *recordLock) write(obj object, rec Record, epoch uint64) error {
	if err := l.kind.write(obj, rec); err != nil {
		return err
	}
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	if rec.HolderIdentity != "" && l.holderPod != "" {
		annotations[AnnotationHolderPod] = l.holderPod
	} else {
		delete(annotations, AnnotationHolderPod)
	}
	if next, ok := parseCandidate(annotations[AnnotationSuccessor]); ok &&
		(next.id == rec.HolderIdentity || next.returnWait > 0 && rec.HolderIdentity != "") {
		// The successor took the lock, or someone did after the wait for a
		// leader that did not come back: the next is named anew. A return
		// left behind would hold the next release up for a TTL again.
		delete(annotations, AnnotationSuccessor)
	}
	if epoch != 0 {
		annotations[AnnotationEpoch] = epochValue(epoch, rec)
	} else {
		delete(annotations, AnnotationEpoch)
	}
	if len(annotations) == 0 {
		annotations = nil
	}
	obj.SetAnnotations(annotations)
	return nil
}

// get reads the lock object. It returns a NotFound API error when there is
// none.
func (l *recordLock) get(ctx context.Context) (*observation, error) {
	obj := l.kind.newObject()
	err := l.client.Get().Namespace(l.namespace).Resource(l.kind.resource).Name(l.name).Do(ctx).Into(obj)
	if err != nil {
		return nil, err
	}
	return l.observe(obj), nil
}

// create makes the lock object holding rec. It fails with an AlreadyExists
// API error when another participant was first.
func (l *recordLock) create(ctx context.Context, rec Record) (*observation, error) {
	obj := l.kind.newObject()
	obj.SetNamespace(l.namespace)
	obj.SetName(l.name)
	if err := l.write(obj, rec, 0); err != nil {
		return nil, err
	}
	out := l.kind.newObject()
	err := l.client.Post().Namespace(l.namespace).Resource(l.kind.resource).Body(obj).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return l.observe(out), nil
}

// update replaces the record and its epoch on the version of the object in
// prev. The API server rejects it with a Conflict error when the object
// changed since. Everything else on the object (labels, other annotations,
// data) is kept.
//
// An admission policy from before the epoch annotation (config/policy of an
// older release) refuses a write that adds it: the write is sent again
// without it, and from then on none carries it. The election goes on, and
// an epoch is known to the leader only (see Status.Epoch), until the
// elector restarts under a policy that admits it.
func (l *recordLock) update(ctx context.Context, prev *observation, rec Record, epoch uint64) (*observation, error) {
	if l.noEpoch {
		epoch = 0
	}
	out, err := l.put(ctx, prev, rec, epoch)
	if apierrors.IsForbidden(err) && epoch != 0 && prev.object.GetAnnotations()[AnnotationEpoch] == "" {
		refused := err
		if out, err = l.put(ctx, prev, rec, 0); err == nil {
			l.noEpoch = true
			if l.onNoEpoch != nil {
				l.onNoEpoch(refused)
			}
		}
	}
	return out, err
}

// put writes rec and its epoch over the version of the object in prev.
func (l *recordLock) put(ctx context.Context, prev *observation, rec Record, epoch uint64) (*observation, error) {
	obj := prev.object.DeepCopyObject().(object)
	if err := l.write(obj, rec, epoch); err != nil {
		return nil, err
	}
	out := l.kind.newObject()
	err := l.client.Put().Namespace(l.namespace).Resource(l.kind.resource).Name(l.name).Body(obj).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	// Read the record back rather than keep rec: the server stores times at
	// its own precision, and the watch will deliver this same version.
	return l.observe(out), nil
}

// annotate sets one annotation on the version of the object in prev and
// changes nothing else, with a compare-and-swap like update.
func (l *recordLock) annotate(ctx context.Context, prev *observation, key, value string) (*observation, error) {
	obj := prev.object.DeepCopyObject().(object)
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[key] = value
	obj.SetAnnotations(annotations)
	out := l.kind.newObject()
	err := l.client.Put().Namespace(l.namespace).Resource(l.kind.resource).Name(l.name).Body(obj).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return l.observe(out), nil
}

// watch streams changes of the lock object after resourceVersion; from ""
// it starts with the object as it is now. The server ends the stream after
// timeoutSeconds; the caller watches again from the last version it saw.
func (l *recordLock) watch(ctx context.Context, resourceVersion string, timeoutSeconds int64) (watch.Interface, error) {
	return l.client.Get().Namespace(l.namespace).Resource(l.kind.resource).
		VersionedParams(&metav1.ListOptions{
			FieldSelector:       l.fieldSelector(),
			ResourceVersion:     resourceVersion,
			Watch:               true,
			AllowWatchBookmarks: true,
			TimeoutSeconds:      &timeoutSeconds,
		}, metav1.ParameterCodec).
		Watch(ctx)
}

func (l *recordLock) fieldSelector() string {
	return fields.OneTermEqualSelector("metadata.name", l.name).String()
}

// reference points an Event at the lock object.
func (l *recordLock) reference(o *observation) objectReference {
	ref := objectReference{
		APIVersion: l.kind.gvk.GroupVersion().String(),
		Kind:       l.kind.gvk.Kind,
		Namespace:  l.namespace,
		Name:       l.name,
	}
	if o != nil && o.object != nil {
		ref.UID = o.object.GetUID()
		ref.ResourceVersion = o.object.GetResourceVersion()
	}
	return ref
}

var leaseKind = lockKind{
	resource:  "leases",
	gvk:       coordinationv1.SchemeGroupVersion.WithKind("Lease"),
	newObject: func() object { return &coordinationv1.Lease{} },
	read: func(obj object) (Record, error) {
		return recordFromLease(&obj.(*coordinationv1.Lease).Spec), nil
	},
	write: func(obj object, rec Record) error {
		lease := obj.(*coordinationv1.Lease)
		lease.Spec = rec.leaseSpec(lease.Spec)
		return nil
	},
}

var configMapKind = annotationKind("configmaps", coreV1.WithKind("ConfigMap"),
	func() object { return &configMap{} })

// The Endpoints API is deprecated, and kept here for elections that older
// electors still hold on Endpoints.
var endpointsKind = annotationKind("endpoints", coreV1.WithKind("Endpoints"),
	func() object { return &endpoints{} })

// annotationKind is a lock that keeps the record in LeaderAnnotation.
func annotationKind(resource string, gvk schema.GroupVersionKind, newObject func() object) lockKind {
	return lockKind{
		resource:  resource,
		gvk:       gvk,
		newObject: newObject,
		read: func(obj object) (Record, error) {
			return recordFromAnnotations(obj.GetAnnotations())
		},
		write: func(obj object, rec Record) error {
			raw, err := rec.annotation()
			if err != nil {
				return err
			}
			annotations := obj.GetAnnotations()
			if annotations == nil {
				annotations = map[string]string{}
			}
			annotations[LeaderAnnotation] = raw
			obj.SetAnnotations(annotations)
			return nil
		},
	}
}
