package election

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// The values of the pod label.
const (
	leader  = "leader"
	standby = "standby"
)

// podLabeler keeps the -pod-label label on pods as the election wants it,
// and with -pod-deletion-cost, the leader's pod-deletion-cost annotation on
// its own pod: the leader's pod carries AnnotationPodDeletionCost =
// LeaderDeletionCost, so that a ReplicaSet scaled down in a rollout deletes
// the old leader's pod last, once new pods are there to take over. Without
// it, a rollout that may take an old pod down first (maxUnavailable above
// zero) takes the leader's as often as another, and leadership hops to an
// old pod that goes next. The annotation needs no ordering (two pods
// carrying it for a moment cost nothing), but it rides the same patches.
//
// Every wanted value is retried until it is written (or the pod is gone), so
// a failed patch cannot leave two pods labelled leader for good. Labels are
// written in the order they were asked for, and a new leader's own pod is
// labelled leader only once every label asked for before it is written: the
// pod it took over from is labelled standby first.
type podLabeler struct {
	client    rest.Interface
	namespace string
	// key is the -pod-label key, "" for none.
	key string
	// cost is -pod-deletion-cost: the annotation on its own pod.
	cost bool
	// self is this participant's own pod.
	self    string
	log     logr.Logger
	metrics *Metrics

	mu      sync.Mutex
	pending []podLabel // in the order to write them; one per pod
	kick    chan struct{}
}

// podLabel is a wanted value of the label on one pod.
type podLabel struct{ pod, value string }

func newPodLabeler(client rest.Interface, namespace, key string, cost bool, self string, log logr.Logger, metrics *Metrics) *podLabeler {
	return &podLabeler{
		client: client, namespace: namespace, key: key, cost: cost, self: self, log: log, metrics: metrics,
		kick: make(chan struct{}, 1),
	}
}

// set asks for the label on pod to be value, after what is pending for
// other pods. A later call for the same pod replaces an earlier one that has
// not been written yet.
func (p *podLabeler) set(pod, value string) {
	p.mu.Lock()
	p.pending = slices.DeleteFunc(p.pending, func(l podLabel) bool { return l.pod == pod })
	p.pending = append(p.pending, podLabel{pod, value})
	p.mu.Unlock()
	poke(p.kick)
}

// keepOnly drops what is pending for every pod but pod: a participant that
// stopped leading must not go on demoting another pod, which may lead by
// now.
func (p *podLabeler) keepOnly(pod string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending = slices.DeleteFunc(p.pending, func(l podLabel) bool { return l.pod != pod })
}

// run writes what is pending until ctx is done, retrying failures with a
// backoff of up to ten seconds.
func (p *podLabeler) run(ctx context.Context) {
	const minBackoff, maxBackoff = 200 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		}
		if ctx.Err() != nil {
			// ctx ended on the instant of a kick.
			return
		}
		if p.flush(ctx) {
			backoff = minBackoff
			continue
		}
		backoff = sleep(ctx, backoff, maxBackoff)
		poke(p.kick)
	}
}

// flush writes the pending labels in order and reports whether all were
// written. A failure holds back the labels after it, except a refusal
// (Forbidden): the elector may be waiting for its RBAC grant, so that label
// stays pending for the next round and the demotions after it go ahead. A
// promotion never passes a label that is still pending before it: the pod
// this leader took over from is labelled standby first, whatever held that
// back. A refused demotion of a pod that is not labelled leader is done:
// the pod of an upstream participant, say, which the policy keeps this
// participant from labelling, and which labels itself.
func (p *podLabeler) flush(ctx context.Context) bool {
	var skipped []podLabel
	for {
		p.mu.Lock()
		i := slices.IndexFunc(p.pending, func(l podLabel) bool { return !slices.Contains(skipped, l) })
		if i < 0 {
			p.mu.Unlock()
			return len(skipped) == 0
		}
		next := p.pending[i]
		p.mu.Unlock()
		if next.value == leader && len(skipped) > 0 {
			skipped = append(skipped, next)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.patch(pctx, next.pod, next.value)
		if apierrors.IsForbidden(err) && next.value == standby && next.pod != p.self && !p.labelledLeader(pctx, next.pod) {
			// A pod this participant may not label, which does not carry
			// the leader label (another election's, or a participant with
			// another label key or none): there is nothing to demote.
			err = nil
		}
		cancel()
		switch {
		case apierrors.IsForbidden(err):
			skipped = append(skipped, next)
			continue
		case err != nil && !permanent(err):
			return false
		}
		p.mu.Lock()
		if j := slices.Index(p.pending, next); j >= 0 {
			p.pending = slices.Delete(p.pending, j, j+1)
		}
		p.mu.Unlock()
	}
}

// labelledLeader reports whether pod may carry the leader label: it does,
// or it could not be read.
func (p *podLabeler) labelledLeader(ctx context.Context, pod string) bool {
	var got corePod
	err := p.client.Get().Namespace(p.namespace).Resource("pods").Name(pod).Do(ctx).Into(&got)
	switch {
	case apierrors.IsNotFound(err):
		return false
	case err != nil:
		return true
	}
	return got.Labels[p.key] == leader
}

// patch sets the label on one pod, and the deletion cost on its own, with a
// merge patch, which touches no other label or annotation. A pod with
// nothing to write (another pod, without -pod-label) is not patched.
func (p *podLabeler) patch(ctx context.Context, pod, value string) error {
	meta := map[string]any{}
	if p.key != "" {
		meta["labels"] = map[string]string{p.key: value}
	}
	if p.cost && pod == p.self {
		var cost any // null: a follower's pod has none
		if value == leader {
			cost = LeaderDeletionCost
		}
		meta["annotations"] = map[string]any{AnnotationPodDeletionCost: cost}
	}
	if len(meta) == 0 {
		return nil
	}
	err := p.send(ctx, pod, meta)
	if apierrors.IsForbidden(err) && meta["labels"] != nil && meta["annotations"] != nil {
		// The deletion cost refused (an -pod-deletion-cost the policy does
		// not read as true, say): the label, which a Service may select
		// on, goes alone rather than not at all.
		p.log.Info("the pod's deletion cost was refused; labelling it without", "pod", pod, "err", err.Error())
		delete(meta, "annotations")
		err = p.send(ctx, pod, meta)
	}
	switch {
	case apierrors.IsNotFound(err):
		p.log.V(1).Info("pod to label is gone", "pod", pod)
	case err != nil:
		p.metrics.apiError("label")
		p.log.Error(err, "could not label pod; retrying", "pod", pod, "as", value)
	default:
		p.log.V(1).Info("labelled pod", "pod", pod, "as", value)
	}
	return err
}

// send merge-patches the pod's metadata with meta.
func (p *podLabeler) send(ctx context.Context, pod string, meta map[string]any) error {
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	return p.client.Patch(types.MergePatchType).Namespace(p.namespace).Resource("pods").Name(pod).Body(body).Do(ctx).Error()
}

// permanent reports an error that retrying will not fix: the pod is gone,
// or the patch itself is refused as invalid. It is logged, and the labels
// after it go ahead.
func permanent(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}
