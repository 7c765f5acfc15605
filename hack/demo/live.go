package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/podrunner"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// electors follows what the demo shows: each running elector's GET /watch
// stream, the namespace's pods and the EndpointSlice of the Service the
// leader keeps (watches of the API server), so that the table changes when
// an elector's view of the election does, when the Service's endpoint
// moves, and its rows come and go with the pods. Nothing is polled.
type electors struct {
	runner *podrunner.Runner
	client kubernetes.Interface
	ns     string
	// service is the Service whose endpoint the table shows.
	service string
	logf    func(format string, args ...any)
	// changed gets a value after every change; changes that come while one
	// is pending are folded into it.
	changed chan struct{}

	mu sync.Mutex
	// watched are the electors whose stream is followed, by pod name.
	watched map[string]*elector
	// ips are the pods' IPs, by name, as the pod watch last saw them, and
	// endpoint the address the Service's slice lists ("" for none).
	ips      map[string]string
	endpoint string
	wg       sync.WaitGroup
}

// elector is one elector's stream and what it last said.
type elector struct {
	pod    *podrunner.Pod
	cancel context.CancelFunc
	// status is the stream's last document; seen is false until the first.
	status election.Status
	seen   bool
}

func newElectors(runner *podrunner.Runner, client kubernetes.Interface, ns, service string, logf func(string, ...any)) *electors {
	return &electors{
		runner: runner, client: client, ns: ns, service: service, logf: logf,
		changed: make(chan struct{}, 1),
		watched: map[string]*elector{}, ips: map[string]string{},
	}
}

// run follows the pods, and through them the electors, and the Service's
// endpoint, until ctx is done, and returns once every stream has ended.
func (e *electors) run(ctx context.Context) {
	defer e.wg.Wait()
	e.wg.Go(func() { e.keepWatching(ctx, e.watchEndpoint) })
	e.keepWatching(ctx, e.watchPods)
}

// keepWatching runs watch again each time it ends, until ctx is done: a
// closed or expired watch is listed and watched again.
func (e *electors) keepWatching(ctx context.Context, watch func(context.Context) error) {
	for ctx.Err() == nil {
		if err := watch(ctx); err != nil && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// watchEndpoint lists, then follows, the Service's EndpointSlice.
func (e *electors) watchEndpoint(ctx context.Context) error {
	endpointSlices := e.client.DiscoveryV1().EndpointSlices(e.ns)
	byName := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", e.service).String()}
	list, err := endpointSlices.List(ctx, byName)
	if err != nil {
		return err
	}
	e.setEndpoint(nil)
	for i := range list.Items {
		e.setEndpoint(&list.Items[i])
	}
	byName.ResourceVersion = list.ResourceVersion
	w, err := endpointSlices.Watch(ctx, byName)
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		switch s, ok := ev.Object.(*discoveryv1.EndpointSlice); {
		case ev.Type == watch.Error:
			return apierrors.FromObject(ev.Object)
		case ev.Type == watch.Deleted:
			e.setEndpoint(nil)
		case ok:
			e.setEndpoint(s)
		}
	}
	return errors.New("the EndpointSlice watch closed")
}

// setEndpoint notes the address slice lists (nil: none).
func (e *electors) setEndpoint(slice *discoveryv1.EndpointSlice) {
	var addrs []string
	if slice != nil {
		for _, ep := range slice.Endpoints {
			addrs = append(addrs, ep.Addresses...)
		}
	}
	e.mu.Lock()
	e.endpoint = strings.Join(addrs, ",")
	e.mu.Unlock()
	e.notify()
}

// watchPods lists the pods, then follows their changes until the watch
// ends. Every event may mean an elector started (the pod runner marks a pod
// ready once its elector answers) or stopped (the pod is terminating).
func (e *electors) watchPods(ctx context.Context) error {
	pods := e.client.CoreV1().Pods(e.ns)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	e.mu.Lock()
	clear(e.ips)
	for _, p := range list.Items {
		e.ips[p.Name] = p.Status.PodIP
	}
	e.mu.Unlock()
	e.sync(ctx)
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			return apierrors.FromObject(ev.Object)
		}
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		e.mu.Lock()
		if ev.Type == watch.Deleted {
			delete(e.ips, pod.Name)
		} else {
			e.ips[pod.Name] = pod.Status.PodIP
		}
		e.mu.Unlock()
		e.sync(ctx)
		e.notify()
	}
	return errors.New("the pod watch closed")
}

// sync starts a stream for each elector the pod runner runs and has none,
// and ends those of electors it no longer runs.
func (e *electors) sync(ctx context.Context) {
	running := e.runner.Running()
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, el := range e.watched {
		if !slices.ContainsFunc(running, func(p *podrunner.Pod) bool { return p == el.pod }) {
			el.cancel()
			delete(e.watched, name)
		}
	}
	for _, p := range running {
		if el := e.watched[p.Name]; el != nil && el.pod == p {
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		el := &elector{pod: p, cancel: cancel}
		e.watched[p.Name] = el
		e.wg.Go(func() { e.follow(sctx, el) })
	}
}

// follow reads an elector's /watch stream until the elector stops (its
// server ends the stream on shutdown) or ctx is done.
func (e *electors) follow(ctx context.Context, el *elector) {
	defer el.cancel()
	var failed bool
	for {
		err := e.stream(ctx, el)
		if ctx.Err() != nil {
			return
		}
		if !slices.Contains(e.runner.Running(), el.pod) {
			// The pod was deleted: its elector is gone from the table.
			e.mu.Lock()
			if e.watched[el.pod.Name] == el {
				delete(e.watched, el.pod.Name)
			}
			e.mu.Unlock()
			e.notify()
			return
		}
		// The elector still runs: ask again, and say why once. An elector
		// that has not answered yet may still be starting.
		e.mu.Lock()
		seen := el.seen
		e.mu.Unlock()
		if err != nil && seen && !failed {
			e.logf("pod %s: the elector's %s stream: %v; asking again", el.pod.Name, election.PathWatch, err)
		}
		failed = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stream reads one GET /watch stream: a "data: <status>" event at once,
// then one on every change.
func (e *electors) stream(ctx context.Context, el *elector) error {
	w, err := controlplane.WatchElector(ctx, nil, el.pod.Addr)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		st, err := w.Next()
		if errors.Is(err, io.EOF) {
			return nil // the elector ended the stream
		}
		if err != nil {
			return err
		}
		e.mu.Lock()
		el.status, el.seen = st, true
		e.mu.Unlock()
		e.notify()
	}
}

func (e *electors) notify() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

// table renders the electors' view of the election, and returns the pod
// whose elector says it leads ("" if none) and how many electors there are.
func (e *electors) table() (string, string, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	names := make([]string, 0, len(e.watched))
	for name := range e.watched {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "POD\tELECTOR\tIS_LEADER\tLEADER\tEPOCH\tSERVICE "+e.service)
	var leader string
	for _, name := range names {
		el := e.watched[name]
		isLeader, leaderName, epoch := "", "", ""
		if el.seen {
			isLeader, leaderName, epoch = fmt.Sprint(el.status.IsLeader), el.status.Leader, fmt.Sprint(el.status.Epoch)
			if el.status.IsLeader && leader == "" {
				leader = name
			}
		}
		endpoint := ""
		if ip := e.ips[name]; ip != "" && ip == e.endpoint {
			endpoint = "endpoint " + ip
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", name, "http://"+el.pod.Addr, isLeader, leaderName, epoch, endpoint)
	}
	_ = w.Flush()
	return b.String(), leader, len(names)
}

// leads reports whether the elector of pod says, in its stream, that it
// leads.
func (e *electors) leads(pod string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	el := e.watched[pod]
	return el != nil && el.seen && el.status.IsLeader
}

// addr is the address of pod's elector, "" if it has none.
func (e *electors) addr(pod string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if el := e.watched[pod]; el != nil {
		return el.pod.Addr
	}
	return ""
}
