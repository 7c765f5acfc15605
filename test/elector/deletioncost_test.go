package elector

import (
	"fmt"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestPodDeletionCost: with -pod-deletion-cost, the leader's pod carries
// the highest pod-deletion-cost and the others' none, across a handover. A
// leader that shuts down leaves its pod's as it is (the pod goes away);
// its successor's pod gets it. An unrelated annotation stays.
func TestPodDeletionCost(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	pods := map[*participant]string{}
	var ps []*participant
	for _, name := range []string{"a", "b", "c"} {
		pod := "pod-" + name
		createPod(t, ns, pod)
		annotate(t, ns, pod, "example.com/keep", "yes")
		p := w.start(name, adminKubeconfig, electionArgs(ns, std, "-pod-deletion-cost", "-pod-name="+pod)...)
		pods[p] = pod
		ps = append(ps, p)
	}
	waitCost := func(leader *participant, others ...*participant) {
		t.Helper()
		eventually(t, settle, func() error {
			for _, p := range append([]*participant{leader}, others...) {
				pod, err := env.Client.CoreV1().Pods(ns).Get(ctxFor(t, apiTimeout), pods[p], metav1.GetOptions{})
				if err != nil {
					return err
				}
				want := ""
				if p == leader {
					want = election.LeaderDeletionCost
				}
				if got := pod.Annotations[election.AnnotationPodDeletionCost]; got != want {
					return fmt.Errorf("pod %s has pod-deletion-cost %q, want %q", pods[p], got, want)
				}
				if pod.Annotations["example.com/keep"] != "yes" {
					return fmt.Errorf("pod %s lost its other annotation: %v", pods[p], pod.Annotations)
				}
			}
			return nil
		})
	}
	first := w.waitLeader(settle, ps...)
	var rest []*participant
	for _, p := range ps {
		if p != first {
			rest = append(rest, p)
		}
	}
	waitCost(first, rest...)
	if _, err := first.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	second := w.waitLeader(settle, rest...)
	var third *participant
	for _, p := range rest {
		if p != second {
			third = p
		}
	}
	waitCost(second, third)
}

// annotate sets one annotation on a pod, as its owner would.
func annotate(t *testing.T, ns, pod, key, value string) {
	t.Helper()
	body := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if _, err := env.Client.CoreV1().Pods(ns).Patch(ctxFor(t, apiTimeout), pod, "application/merge-patch+json", body, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
