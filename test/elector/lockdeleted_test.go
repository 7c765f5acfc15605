package elector

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFirstElection checks that the first election on a lock that does not
// exist yet takes at least a ttl: a participant creates a missing lock only
// after it has seen it missing for a full lease, because a lock that is
// missing may have been deleted under a leader that still leads.
func TestFirstElection(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	p := w.start("a", serviceAccountKubeconfig(t, ns, false), electionArgs(ns, std)...)
	w.waitLeader(settle, p)
	took, _ := w.firstTrue(p, p.started)
	if d := took.to.Sub(p.started); d < std.ttl {
		t.Errorf("led %s after it started on a missing lock, want at least the ttl %s", d.Round(time.Millisecond), std.ttl)
	}
}

// TestLockDeletedFreshJoiner deletes the lock while its leader is cut off
// from the API server, then starts a fresh participant: it must not lead
// while the old leader may still say it leads, and the old leader stops
// saying so within its renew deadline.
func TestLockDeletedFreshJoiner(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, false)
	px := newProxy(t, apiHost(t))
	w := newWatcher(t, std.gap())
	old := w.start("old", viaProxy(t, kubeconfig, px), electionArgs(ns, std)...)
	w.waitLeader(settle, old)

	px.cut()
	cut := time.Now()
	if err := env.Client.CoordinationV1().Leases(ns).Delete(ctxFor(t, apiTimeout), electionName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := w.start("fresh", kubeconfig, electionArgs(ns, std)...)
	w.waitLeader(settle, fresh)
	for _, s := range w.samplesOf(old) {
		if s.leader && !s.from.Before(cut.Add(std.renew)) {
			t.Errorf("the cut-off leader said is_leader=true at %s, past its renew deadline", s.from.Format(time.StampMilli))
			break
		}
	}
	px.restore(t)
	if got := w.waitLeader(settle, old, fresh); got != fresh {
		t.Errorf("leader once the old one is back = %s, want fresh", got.id)
	}
}
