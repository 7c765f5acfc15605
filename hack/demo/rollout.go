package demo

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// The kinds of workload a rollout rolls.
const (
	kindDeployment  = "Deployment"
	kindStatefulSet = "StatefulSet"
)

// rollout is one rolling update of a Deployment or StatefulSet, restarted
// the way `kubectl rollout restart` does, and the leaders of its election
// while it runs.
type rollout struct {
	client         kubernetes.Interface
	ns, kind, name string
	start          time.Time

	// leads reports whether the elector of a pod says it leads.
	leads func(pod string) bool

	cancel context.CancelFunc
	mu     sync.Mutex
	// terms are the election's terms seen since the rollout started, the
	// one at its start first, each once in a row (no holder: a release).
	terms []term
	// seen is when the watch brought each of terms.
	seen []time.Time
	err  error
}

// term is one holder's term: its ID and epoch. A StatefulSet's new pod has
// the name, and so the ID, of the old one it replaces; its term has an
// epoch of its own.
type term struct{ holder, epoch string }

func termOf(l *coordinationv1.Lease) term {
	epoch, _, _ := strings.Cut(l.Annotations[election.AnnotationEpoch], "/")
	return term{holder: holderOf(l), epoch: epoch}
}

// follows reports whether t is a new term after last, a term with a holder.
// A term whose epoch is not written yet (the lock was just made) is the
// same as the one with its epoch.
func (t term) follows(last term) bool {
	return t.holder != "" && (t.holder != last.holder || t.epoch != "" && last.epoch != "" && t.epoch != last.epoch)
}

// startRollout restarts the workload kind/name in ns and watches the Lease
// of election until stop.
func startRollout(ctx context.Context, client kubernetes.Interface, ns, kind, name, electionName string, leads func(string) bool) (*rollout, error) {
	lease, err := client.CoordinationV1().Leases(ns).Get(ctx, electionName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("lease %s/%s: %w", ns, electionName, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	r := &rollout{client: client, ns: ns, kind: kind, name: name, leads: leads, cancel: cancel, terms: []term{termOf(lease)}, seen: []time.Time{time.Now()}}
	w, err := client.CoordinationV1().Leases(ns).Watch(wctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + electionName, ResourceVersion: lease.ResourceVersion,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go r.follow(w)
	r.start = time.Now()
	patch := fmt.Appendf(nil, `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, r.start.Format(time.RFC3339Nano))
	switch kind {
	case kindDeployment:
		_, err = client.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	case kindStatefulSet:
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
		t := termOf(l)
		r.mu.Lock()
		if r.terms[len(r.terms)-1] != t {
			r.terms = append(r.terms, t)
			r.seen = append(r.seen, time.Now())
		}
		r.mu.Unlock()
	}
}

// longestRelease is the longest the lock stayed released, from a release
// to the next holder, as the watch brought them; zero when it never was.
func (r *rollout) longestRelease() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var longest time.Duration
	for i := 1; i+1 < len(r.terms); i++ {
		if r.terms[i].holder == "" && r.terms[i+1].holder != "" {
			longest = max(longest, r.seen[i+1].Sub(r.seen[i]))
		}
	}
	return longest
}

// history lists the terms seen, as holder@epoch, "-" for a release.
func (r *rollout) history() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.terms))
	for i, t := range r.terms {
		out[i] = "-"
		if t.holder != "" {
			out[i] = t.holder + "@" + t.epoch
		}
	}
	return strings.Join(out, " ")
}

// changes counts the leader changes since the rollout started: each new
// term, releases aside.
func (r *rollout) changes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, last := 0, r.terms[0]
	for _, t := range r.terms[1:] {
		if t.follows(last) {
			n++
		}
		if t.holder != "" {
			last = t
		}
	}
	return n
}

// leader is the last holder seen ("" when released).
func (r *rollout) leader() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.terms[len(r.terms)-1].holder
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
	var updated bool
	switch r.kind {
	case kindDeployment:
		updated, err = check(ctx, r.client.AppsV1().Deployments(r.ns), r.name, deploymentUpdated)
	case kindStatefulSet:
		updated, err = check(ctx, r.client.AppsV1().StatefulSets(r.ns), r.name, statefulSetUpdated)
	}
	if err != nil || !updated {
		return false, err
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
	// is one of them, once its elector says it leads.
	return pod.DeletionTimestamp == nil && r.leads(leader), nil
}

// stop ends the watch of the Lease.
func (r *rollout) stop() { r.cancel() }

// check reads the workload name and asks updated of it.
func check[T any](ctx context.Context, c interface {
	Get(context.Context, string, metav1.GetOptions) (T, error)
}, name string, updated func(T) bool) (bool, error) {
	obj, err := c.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	return updated(obj), nil
}

// deploymentUpdated: the controller has seen the restart, and every replica
// is updated and ready with none of the old left.
func deploymentUpdated(d *appsv1.Deployment) bool {
	want, s := *d.Spec.Replicas, d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.ReadyReplicas == want
}

// statefulSetUpdated: the controller has seen the restart, the update
// revision is current, and every replica is updated and ready.
func statefulSetUpdated(s *appsv1.StatefulSet) bool {
	want, st := *s.Spec.Replicas, s.Status
	return st.ObservedGeneration >= s.Generation && st.CurrentRevision == st.UpdateRevision && st.UpdatedReplicas == want && st.ReadyReplicas == want
}
