package demo

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// rollout is one rolling update of a Deployment or StatefulSet, restarted
// the way `kubectl rollout restart` does, and the leaders of its election
// while it runs.
type rollout struct {
	client         kubernetes.Interface
	ns, kind, name string
	start          time.Time

	cancel context.CancelFunc
	mu     sync.Mutex
	// holders are the election's holders seen since the rollout started,
	// the one at its start first, each once in a row ("" for a release).
	holders []string
	err     error
}

// startRollout restarts the workload kind/name in ns and watches the Lease
// of election until stop.
func startRollout(ctx context.Context, client kubernetes.Interface, ns, kind, name, election string) (*rollout, error) {
	lease, err := client.CoordinationV1().Leases(ns).Get(ctx, election, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("lease %s/%s: %w", ns, election, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	r := &rollout{client: client, ns: ns, kind: kind, name: name, cancel: cancel, holders: []string{holderOf(lease)}}
	w, err := client.CoordinationV1().Leases(ns).Watch(wctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + election, ResourceVersion: lease.ResourceVersion,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go r.follow(w)
	r.start = time.Now()
	patch := fmt.Appendf(nil, `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, r.start.Format(time.RFC3339Nano))
	switch kind {
	case "Deployment":
		_, err = client.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	case "StatefulSet":
		_, err = client.AppsV1().StatefulSets(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	default:
		err = fmt.Errorf("cannot roll a %s", kind)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

func holderOf(l *coordinationv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// follow records every holder the watch shows.
func (r *rollout) follow(w watch.Interface) {
	defer w.Stop()
	for ev := range w.ResultChan() {
		l, ok := ev.Object.(*coordinationv1.Lease)
		if !ok {
			if ev.Type == watch.Error {
				r.mu.Lock()
				r.err = apierrors.FromObject(ev.Object)
				r.mu.Unlock()
			}
			continue
		}
		h := holderOf(l)
		r.mu.Lock()
		if r.holders[len(r.holders)-1] != h {
			r.holders = append(r.holders, h)
		}
		r.mu.Unlock()
	}
}

// changes counts the leader changes since the rollout started: each time
// the lock went to a holder other than the last one, releases aside.
func (r *rollout) changes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, last := 0, r.holders[0]
	for _, h := range r.holders[1:] {
		if h != "" && h != last {
			n++
		}
		if h != "" {
			last = h
		}
	}
	return n
}

// leader is the last holder seen ("" when released).
func (r *rollout) leader() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holders[len(r.holders)-1]
}

// done reports whether the rollout is over: every replica updated and
// ready, none of the old left, and the lock held by a pod the rollout made.
func (r *rollout) done(ctx context.Context) (bool, error) {
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("watching the lease: %w", err)
	}
	switch r.kind {
	case "Deployment":
		d, err := r.client.AppsV1().Deployments(r.ns).Get(ctx, r.name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := *d.Spec.Replicas
		s := d.Status
		if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.Replicas != want || s.ReadyReplicas != want {
			return false, nil
		}
	case "StatefulSet":
		s, err := r.client.AppsV1().StatefulSets(r.ns).Get(ctx, r.name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := *s.Spec.Replicas
		st := s.Status
		if st.ObservedGeneration < s.Generation || st.CurrentRevision != st.UpdateRevision || st.UpdatedReplicas != want || st.ReadyReplicas != want {
			return false, nil
		}
	}
	leader := r.leader()
	if leader == "" {
		return false, nil
	}
	pod, err := r.client.CoreV1().Pods(r.ns).Get(ctx, leader, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Every pod left is the rollout's: a leader that is not terminating
	// is one of them.
	return pod.DeletionTimestamp == nil, nil
}

// stop ends the watch of the Lease.
func (r *rollout) stop() { r.cancel() }
