// Package election runs one participant of a leader election on a
// Kubernetes lock object (a coordination.k8s.io Lease, or for compatibility
// with older clients a ConfigMap or Endpoints annotation) and reports its
// state over HTTP.
//
// The loop follows client-go's tools/leaderelection where safety lives: a
// lease's expiry is judged from the moment this participant observed the last
// change of the record, on its local monotonic clock, plus the record's lease
// duration; every write is a compare-and-swap on resourceVersion; a leader
// that cannot renew within the renew deadline steps down. It differs in what
// it costs and how fast it hands over: followers watch the lock instead of
// polling it, and a released lock is taken by a follower as soon as the watch
// delivers the release.
//
// The package talks to the API server through a REST client whose scheme
// holds only the types it uses, so the elector binary stays small; it must
// not import a typed clientset or controller-runtime.
package election
