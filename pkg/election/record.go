package election

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LeaderAnnotation is where ConfigMap and Endpoints locks keep the record,
// as JSON. The key and the format are client-go's from before it removed
// those locks, so an older elector and this one share an election.
const LeaderAnnotation = "control-plane.alpha.kubernetes.io/leader"

// Record is the state of an election as stored on the lock object. Its JSON
// form is exactly client-go's LeaderElectionRecord: times are RFC3339 with
// whole seconds.
type Record struct {
	// HolderIdentity is the leader's ID; empty when the lock was released.
	HolderIdentity       string      `json:"holderIdentity"`
	LeaseDurationSeconds int         `json:"leaseDurationSeconds"`
	AcquireTime          metav1.Time `json:"acquireTime"`
	RenewTime            metav1.Time `json:"renewTime"`
	LeaderTransitions    int         `json:"leaderTransitions"`
}

// leaseDuration is how long after observing this record a participant must
// wait before it may take the lock.
func (r Record) leaseDuration() time.Duration {
	return time.Duration(r.LeaseDurationSeconds) * time.Second
}

// equal reports whether two records are the same. Times are compared at the
// precision the lock stores, so a record read back equals the one written.
func (r Record) equal(o Record) bool {
	return r.HolderIdentity == o.HolderIdentity &&
		r.LeaseDurationSeconds == o.LeaseDurationSeconds &&
		r.LeaderTransitions == o.LeaderTransitions &&
		r.AcquireTime.Equal(&o.AcquireTime) &&
		r.RenewTime.Equal(&o.RenewTime)
}

// recordFromLease reads a record from a Lease's spec. A Lease with no spec
// fields (created by hand, say) reads as a released lock.
func recordFromLease(spec *coordinationv1.LeaseSpec) Record {
	var r Record
	if spec.HolderIdentity != nil {
		r.HolderIdentity = *spec.HolderIdentity
	}
	if spec.LeaseDurationSeconds != nil {
		r.LeaseDurationSeconds = int(*spec.LeaseDurationSeconds)
	}
	if spec.LeaseTransitions != nil {
		r.LeaderTransitions = int(*spec.LeaseTransitions)
	}
	if spec.AcquireTime != nil {
		r.AcquireTime = metav1.NewTime(spec.AcquireTime.Time)
	}
	if spec.RenewTime != nil {
		r.RenewTime = metav1.NewTime(spec.RenewTime.Time)
	}
	return r
}

// leaseSpec writes a record into a Lease spec, keeping the fields that the
// record does not own (strategy, preferred holder) as they were.
func (r Record) leaseSpec(spec coordinationv1.LeaseSpec) coordinationv1.LeaseSpec {
	duration := int32(r.LeaseDurationSeconds)
	transitions := int32(r.LeaderTransitions)
	holder := r.HolderIdentity
	spec.HolderIdentity = &holder
	spec.LeaseDurationSeconds = &duration
	spec.LeaseTransitions = &transitions
	spec.AcquireTime = &metav1.MicroTime{Time: r.AcquireTime.Time}
	spec.RenewTime = &metav1.MicroTime{Time: r.RenewTime.Time}
	return spec
}

// recordFromAnnotations reads the record of a ConfigMap or Endpoints lock.
// An object without the annotation reads as a released lock.
func recordFromAnnotations(annotations map[string]string) (Record, error) {
	var r Record
	raw, ok := annotations[LeaderAnnotation]
	if !ok || raw == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return r, fmt.Errorf("annotation %s: %q is not a leader election record: %w", LeaderAnnotation, raw, err)
	}
	return r, nil
}

// annotation is the record's JSON, as stored in LeaderAnnotation.
func (r Record) annotation() (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode leader election record: %w", err)
	}
	return string(b), nil
}

// olderVersion reports whether a is an older version of the lock object
// than b. Resource versions are etcd revisions, which only grow; one that
// does not parse as a number is taken as newer, as is any after the object
// was made anew.
func olderVersion(a, b object) bool {
	if a == nil || b == nil || a.GetUID() != b.GetUID() {
		return false
	}
	av, aerr := strconv.ParseUint(a.GetResourceVersion(), 10, 64)
	bv, berr := strconv.ParseUint(b.GetResourceVersion(), 10, 64)
	return aerr == nil && berr == nil && av < bv
}
