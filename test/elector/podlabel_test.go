package elector

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// holderPodAnnotation is where the lock names its holder's pod, so a new
// leader demotes that pod whatever the old leader's -id was.
const holderPodAnnotation = "elector.vapor.io/holder-pod"

// upstreamStatusLabel is the label upstream k8s-elector keeps on its pod.
const upstreamStatusLabel = "k8s-elector/status"

// TestPodLabel runs participants whose -id is not their pod's name, each
// with its own connection to the API server, labelling their pods with only
// the shipped Roles. Throughout, no two pods may carry the leader label at
// once (the pods' history is read from a watch, in the API server's order):
// on a first election, across a handover by SIGTERM (the old pod is
// labelled standby before the lock is released), and when the leader is cut
// off from the API server, which leaves demoting its pod to the next leader,
// by the pod name the lock records.
func TestPodLabel(t *testing.T) {
	ns := env.Namespace(t)
	api := apiHost(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, true)
	history := watchLabels(t, ns, "role")
	w := newWatcher(t, std.gap())
	pods := map[*participant]string{}
	proxies := map[*participant]*proxy{}
	var ps []*participant
	for _, name := range []string{"a", "b", "c"} {
		pod := "pod-" + name
		createPod(t, ns, pod)
		px := newProxy(t, api)
		p := w.start("elector-"+name, viaProxy(t, kubeconfig, px), electionArgs(ns, std, "-pod-label=role", "-pod-name="+pod)...)
		pods[p], proxies[p] = pod, px
		ps = append(ps, p)
	}
	podsOf := func(ps ...*participant) []string {
		var out []string
		for _, p := range ps {
			out = append(out, pods[p])
		}
		return out
	}

	first := w.waitLeader(settle, ps...)
	waitLabels(t, ns, "role", pods[first], podsOf(ps...))
	lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctxFor(t, apiTimeout), electionName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := lease.Annotations[holderPodAnnotation]; got != pods[first] {
		t.Errorf("lock annotation %s = %q, want the leader's pod %q", holderPodAnnotation, got, pods[first])
	}
	if tr := lease.Spec.LeaseTransitions; tr == nil || *tr != 0 {
		t.Errorf("leaseTransitions of a new lock = %v, want 0", ptrString(tr))
	}

	if _, err := first.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	second := w.waitLeader(settle, ps...)
	waitLabels(t, ns, "role", pods[second], podsOf(ps...))

	proxies[second].cut()
	var third *participant
	for _, p := range ps {
		if p != first && p != second {
			third = p
		}
	}
	w.waitLeader(settle, third)
	// second is still running, cut off: only third can have demoted it.
	waitLabels(t, ns, "role", pods[third], podsOf(second, third))
	proxies[second].restore(t)
	w.waitLeader(settle, second, third)
	history.check()
}

// TestUpstreamPodLabel runs electors as upstream's chart does, with the pod
// name in ELECTOR_POD_NAME and no -pod-label: they keep upstream's label
// k8s-elector/status on their pods.
func TestUpstreamPodLabel(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, true)
	history := watchLabels(t, ns, upstreamStatusLabel)
	w := newWatcher(t, std.gap())
	pods := map[*participant]string{}
	var ps []*participant
	for _, name := range []string{"pod-a", "pod-b"} {
		createPod(t, ns, name)
		p := w.startEnv([]string{"ELECTOR_POD_NAME=" + name}, name, kubeconfig, electionArgs(ns, std)...)
		pods[p] = name
		ps = append(ps, p)
	}
	leader := w.waitLeader(settle, ps...)
	waitLabels(t, ns, upstreamStatusLabel, pods[leader], []string{"pod-a", "pod-b"})
	if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	next := w.waitLeader(settle, ps...)
	waitLabels(t, ns, upstreamStatusLabel, pods[next], []string{"pod-a", "pod-b"})
	history.check()
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func apiHost(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func createPod(t *testing.T, ns, name string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, apiTimeout), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitLabels waits until exactly leaderPod of pods is labelled key=leader
// and every other key=standby, and no other label was lost.
func waitLabels(t *testing.T, ns, key, leaderPod string, pods []string) {
	t.Helper()
	var got map[string]string
	eventually(t, settle, func() error {
		got = map[string]string{}
		ok := true
		for _, name := range pods {
			pod, err := env.Client.CoreV1().Pods(ns).Get(ctxFor(t, apiTimeout), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			got[name] = pod.Labels[key]
			want := "standby"
			if name == leaderPod {
				want = "leader"
			}
			if pod.Labels[key] != want || pod.Labels["app"] != "x" {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("pod labels %s = %v, want %s leader and the others standby", key, got, leaderPod)
		}
		return nil
	})
}

// labelHistory follows the pods of a namespace through a watch and records
// every moment, in the API server's order, at which more than one pod was
// labelled key=leader.
type labelHistory struct {
	t          *testing.T
	mu         sync.Mutex
	events     int
	violations []string
	done       chan struct{}
}

func watchLabels(t *testing.T, ns, key string) *labelHistory {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := env.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &labelHistory{t: t, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		labels := map[string]string{}
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(labels, pod.Name)
			} else {
				labels[pod.Name] = pod.Labels[key]
			}
			var leaders []string
			for name, v := range labels {
				if v == "leader" {
					leaders = append(leaders, name)
				}
			}
			h.mu.Lock()
			h.events++
			if len(leaders) > 1 {
				h.violations = append(h.violations, fmt.Sprintf("%v at resourceVersion %s", leaders, pod.ResourceVersion))
			}
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		w.Stop()
		<-h.done
	})
	return h
}

// check fails the test if two pods were ever labelled leader at once.
func (h *labelHistory) check() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.violations) > 0 {
		h.t.Errorf("two pods labelled leader at once (%d times in %d pod events), first: %s", len(h.violations), h.events, h.violations[0])
	}
}
