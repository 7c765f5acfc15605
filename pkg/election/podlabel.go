package election

import (
	"context"
	"encoding/json"
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

// podLabeler keeps the -pod-label label on pods as the election wants it.
// Every wanted value is retried until it is written (or the pod is gone), so
// a failed patch cannot leave two pods labelled leader for good.
type podLabeler struct {
	client    rest.Interface
	namespace string
	key       string
	log       logr.Logger
	metrics   *Metrics

	mu      sync.Mutex
	pending map[string]string // pod name -> wanted value
	kick    chan struct{}
}

func newPodLabeler(client rest.Interface, namespace, key string, log logr.Logger, metrics *Metrics) *podLabeler {
	return &podLabeler{
		client: client, namespace: namespace, key: key, log: log, metrics: metrics,
		pending: map[string]string{},
		kick:    make(chan struct{}, 1),
	}
}

// set asks for the label on pod to be value. A later call for the same pod
// replaces an earlier one that has not been written yet.
func (p *podLabeler) set(pod, value string) {
	p.mu.Lock()
	p.pending[pod] = value
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// keepOnly drops what is pending for every pod but pod: a participant that
// stopped leading must not go on demoting another pod, which may lead by
// now.
func (p *podLabeler) keepOnly(pod string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.pending {
		if name != pod {
			delete(p.pending, name)
		}
	}
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
		if p.flush(ctx) {
			backoff = minBackoff
			continue
		}
		backoff = sleep(ctx, backoff, maxBackoff)
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// flush writes every pending label; it reports whether all were written.
func (p *podLabeler) flush(ctx context.Context) bool {
	p.mu.Lock()
	work := make(map[string]string, len(p.pending))
	for pod, value := range p.pending {
		work[pod] = value
	}
	p.mu.Unlock()
	ok := true
	for pod, value := range work {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.patch(pctx, pod, value)
		cancel()
		if err != nil && !apierrors.IsNotFound(err) {
			ok = false
			continue
		}
		p.mu.Lock()
		if p.pending[pod] == value {
			delete(p.pending, pod)
		}
		p.mu.Unlock()
	}
	return ok
}

// patch sets the label on one pod with a merge patch, which touches no other
// label.
func (p *podLabeler) patch(ctx context.Context, pod, value string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{p.key: value}}})
	if err != nil {
		return err
	}
	err = p.client.Patch(types.MergePatchType).Namespace(p.namespace).Resource("pods").Name(pod).Body(body).Do(ctx).Error()
	switch {
	case apierrors.IsNotFound(err):
		p.log.V(1).Info("pod to label is gone", "pod", pod)
	case err != nil:
		p.metrics.apiError("label")
		p.log.Error(err, "could not label pod; retrying", "pod", pod, "label", p.key+"="+value)
	default:
		p.log.V(1).Info("labelled pod", "pod", pod, "label", p.key+"="+value)
	}
	return err
}
