package attack

import (
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// cost is a merge patch of the pod-deletion-cost annotation (nil removes
// it), with any other annotations given.
func cost(value any, more ...string) map[string]any {
	annotations := map[string]any{election.AnnotationPodDeletionCost: value}
	for i := 0; i+1 < len(more); i += 2 {
		annotations[more[i]] = more[i+1]
	}
	return map[string]any{"metadata": map[string]any{"annotations": annotations}}
}

// TestDeletionCostIsTheOnlyPodWrite: an elector with -pod-deletion-cost
// holds pods patch, to keep the leader's pod-deletion-cost on its own pod.
// Its token may set that one annotation to the leader's value, or remove
// it, on the pod it is bound to, and nothing else: not on another pod of
// its election, not another value, not with another change, not from a
// token that is not bound to the pod, not for an elector without
// -pod-deletion-cost.
func TestDeletionCostIsTheOnlyPodWrite(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.account("plain")
	costed := map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodDeletionCost: "true"}
	web0 := a.pod("web-0", "web", costed)
	web1 := a.pod("web-1", "web", costed)
	// The same account runs a second election, without -pod-deletion-cost.
	batch := a.pod("web-batch", "web", map[string]string{webhook.AnnotationElection: "batch"})
	plain := a.pod("plain-0", "plain", map[string]string{webhook.AnnotationElection: "plain"})
	asWeb0, asWeb1, asBatch, asPlain := a.elector(web0), a.elector(web1), a.elector(batch), a.elector(plain)
	unbound, err := controlplane.Token(ctx, env.Client, a.ns, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	asWebUnbound := clientFor(t, unbound)

	t.Run("legitimate", func(t *testing.T) {
		// The grant lands asynchronously: the first write is retried, as
		// the elector retries it.
		eventually(t, 30*time.Second, func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost(election.LeaderDeletionCost))
		})
		if got := a.get("web-0").Annotations[election.AnnotationPodDeletionCost]; got != election.LeaderDeletionCost {
			t.Errorf("web-0's pod-deletion-cost is %q, want %s", got, election.LeaderDeletionCost)
		}
		allowed(t, "web-0 removing its cost", mergePatch(ctx, asWeb0, a.ns, "web-0", cost(nil)))
		allowed(t, "web-1 setting its cost", mergePatch(ctx, asWeb1, a.ns, "web-1", cost(election.LeaderDeletionCost)))
	})

	policy := []refusal{byPolicy(policyPodLabel)}
	attacks := []struct {
		name string
		do   func() error
		by   []refusal
	}{
		{"sets the cost on another pod of its election", func() error {
			// web-0 carries none since it removed its own.
			return mergePatch(ctx, asWeb1, a.ns, "web-0", cost(election.LeaderDeletionCost))
		}, policy},
		{"removes the cost of another pod of its election", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-1", cost(nil))
		}, policy},
		{"sets another cost on its pod", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost("-2147483648"))
		}, policy},
		{"adds another annotation with the cost", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost(election.LeaderDeletionCost, "example.com/owner", "attacker"))
		}, policy},
		{"edits its pod's elector annotations with the cost", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost(election.LeaderDeletionCost, webhook.AnnotationLockType, "configmaps"))
		}, policy},
		{"labels its pod with the cost", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", map[string]any{"metadata": map[string]any{
				"labels":      map[string]any{"app": "attacker"},
				"annotations": map[string]any{election.AnnotationPodDeletionCost: election.LeaderDeletionCost},
			}})
		}, policy},
		{"changes its own pod's image", func() error {
			return setImage(ctx, asWeb0, a.ns, "web-0", "app", "attacker.example/miner:latest")
		}, policy},
		{"sets the cost with a token not bound to the pod", func() error {
			return mergePatch(ctx, asWebUnbound, a.ns, "web-0", cost(election.LeaderDeletionCost))
		}, policy},
		{"sets the cost on its own pod of an election without -pod-deletion-cost", func() error {
			return mergePatch(ctx, asBatch, a.ns, "web-batch", cost(election.LeaderDeletionCost))
		}, policy},
		{"sets the cost on a pod of another account's election", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "plain-0", cost(election.LeaderDeletionCost))
		}, policy},
		{"sets the cost without -pod-deletion-cost at all", func() error {
			return mergePatch(ctx, asPlain, a.ns, "plain-0", cost(election.LeaderDeletionCost))
		}, []refusal{byRBAC("patch", "pods")}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "an elector account "+at.name, at.do(), at.by...)
		})
	}
	for name, want := range map[string]string{"web-0": "", "web-1": election.LeaderDeletionCost, "web-batch": "", "plain-0": ""} {
		if got := a.get(name).Annotations[election.AnnotationPodDeletionCost]; got != want {
			t.Errorf("%s's pod-deletion-cost is %q now, want %q", name, got, want)
		}
	}
	if got := imageOf(t, a.ns, "web-0", "app"); got != "registry.k8s.io/pause:3.10" {
		t.Errorf("web-0 runs %s now", got)
	}
}
