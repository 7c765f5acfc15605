package election

import (
	"strconv"
	"strings"
)

// The epoch numbers the terms of an election, for applications that fence
// their writes to an outside store: every term's epoch is greater than that
// of every term before it, so a store that refuses a write with an epoch
// below the greatest it has seen refuses a stale leader's.
//
// A term's epoch is the resourceVersion of the version of the lock object
// that its leader wrote over to take the lock, or, for a leader that made
// the lock object, that of the object it made. Every version of every
// object of a cluster gets a greater resourceVersion than every version
// before it (it is etcd's revision), so the epoch grows from term to term
// even when the lock object is deleted and made again, or overwritten by
// hand. It goes back only if etcd is restored from a backup.
//
// The leader writes it into AnnotationEpoch with the record's
// leaderTransitions, as "<epoch>/<leaderTransitions>": a participant that
// does not write epochs (upstream k8s-elector, during an upgrade) and takes
// the lock leaves the annotation as it was but counts a transition, so its
// term reads as having no epoch (0) rather than the previous term's.

// epochOf reads the epoch of the term that rec belongs to from the
// annotations of the lock object that holds it; 0 when it has none.
func epochOf(annotations map[string]string, rec Record) uint64 {
	epoch, transitions, ok := strings.Cut(annotations[AnnotationEpoch], "/")
	if !ok || transitions != strconv.Itoa(rec.LeaderTransitions) {
		return 0
	}
	n, err := strconv.ParseUint(epoch, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// epochValue is the AnnotationEpoch value of the term numbered epoch whose
// record is rec.
func epochValue(epoch uint64, rec Record) string {
	return strconv.FormatUint(epoch, 10) + "/" + strconv.Itoa(rec.LeaderTransitions)
}

// versionEpoch is the epoch of a term that begins over obj's version: its
// resourceVersion as a number, or 0 if it is not one (an API server whose
// storage is not etcd).
func versionEpoch(obj object) uint64 {
	if obj == nil {
		return 0
	}
	n, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
