package elector

import (
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// successorOn is the ID the lock names as the successor, "" for none.
func successorOn(t *testing.T, ns string) string {
	t.Helper()
	lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctxFor(t, apiTimeout), electionName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := lease.Annotations[election.AnnotationSuccessor]
	if !ok {
		return ""
	}
	// "<joined>/<id>", or "return/<wait>/<id>"; the IDs here have no "/".
	return v[strings.LastIndex(v, "/")+1:]
}

// waitSuccessor waits until the lock names id as the successor.
func waitSuccessor(t *testing.T, ns, id string) {
	t.Helper()
	eventually(t, settle, func() error {
		if got := successorOn(t, ns); got != id {
			return errNotYet("successor " + got + ", want " + id)
		}
		return nil
	})
}

// TestNewestLeadsNext: the newest participant names itself the successor on
// the lock, and takes the lock when the leader releases it, ahead of older
// followers; each time, over several handovers and joins. Leading, it no
// longer is the successor, and the newest of the others is named next.
func TestNewestLeadsNext(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	// One second apart: a successor is ranked by when it joined, in
	// milliseconds, and then by ID.
	start := func(id string) *participant {
		p := w.start(id, adminKubeconfig, electionArgs(ns, std)...)
		time.Sleep(time.Second)
		return p
	}
	leader := start("a")
	w.waitLeader(settle, leader)
	old := []*participant{start("b"), start("c")}
	for round, id := range []string{"d", "e", "f"} {
		newest := start(id)
		waitSuccessor(t, ns, id)
		released := time.Now()
		if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		next := w.waitLeader(settle, append(old, newest)...)
		if next != newest {
			t.Fatalf("round %d: %s took over from %s, want the newest participant, %s", round, next.id, leader.id, newest.id)
		}
		w.tookOver(released, loadSlack, newest)
		// The newest of the others is named next: the previous one.
		waitSuccessor(t, ns, old[len(old)-1].id)
		leader = newest
	}
}

// TestGoneSuccessorHoldsNoOneUp: a successor that cannot take the lock (its
// process is frozen) holds the others back only for the grace it is given.
// Without -prefer-newest, no successor is named at all.
func TestGoneSuccessorHoldsNoOneUp(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	a := w.start("a", adminKubeconfig, electionArgs(ns, std)...)
	w.waitLeader(settle, a)
	b := w.start("b", adminKubeconfig, electionArgs(ns, std)...)
	time.Sleep(time.Second)
	c := w.start("c", adminKubeconfig, electionArgs(ns, std)...)
	waitSuccessor(t, ns, "c")
	w.freeze(c)
	released := time.Now()
	if _, err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	// b gives c a quarter of the retry period, then takes the lock.
	if got := w.waitLeader(settle, b); got != b {
		t.Fatalf("%s leads, want b", got.id)
	}
	w.tookOver(released, std.retry/4+loadSlack, b)
	c.thaw(t)
	w.waitLeader(settle, b, c)

	racing := env.Namespace(t)
	w2 := newWatcher(t, std.gap())
	x := w2.start("x", adminKubeconfig, electionArgs(racing, std, "-prefer-newest=false")...)
	w2.waitLeader(settle, x)
	w2.start("y", adminKubeconfig, electionArgs(racing, std, "-prefer-newest=false")...)
	time.Sleep(4 * std.retry)
	if got := successorOn(t, racing); got != "" {
		t.Errorf("with -prefer-newest=false, the lock names %s the successor", got)
	}
}

// TestLeaderComesBack: a leader with -return-wait that shuts down (a
// StatefulSet's pod, replaced in a rollout) is waited for. The followers,
// the successor among them, leave the lock alone while it restarts under
// the same ID, and it takes the lock back at once: one handover, to its new
// process. One that does not come back is waited for the return wait only.
func TestLeaderComesBack(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	args := electionArgs(ns, std, "-return-wait="+std.ttl.String())
	a := w.start("a", adminKubeconfig, args...)
	w.waitLeader(settle, a)
	b := w.start("b", adminKubeconfig, args...)
	time.Sleep(time.Second)
	c := w.start("c", adminKubeconfig, args...)
	waitSuccessor(t, ns, "c")

	if _, err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if got := successorOn(t, ns); got != "a" {
		t.Fatalf("after a left, the lock names %q the successor, want a", got)
	}
	w.noLeaderFor(std.ttl/2, b, c)
	restarted := time.Now()
	back := w.start("a", adminKubeconfig, args...)
	if got := w.waitLeader(settle, back, b, c); got != back {
		t.Fatalf("%s took the lock left to a", got.id)
	}
	w.tookOver(restarted, loadSlack, back)

	// Gone for good: the others wait the return wait from the release,
	// not more (the successor c first), then one of them takes the lock.
	released := time.Now()
	if _, err := back.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	w.noLeaderFor(std.ttl/2, b, c)
	w.waitLeader(settle, b, c)
	w.tookOver(released, std.ttl+loadSlack, b, c)
}

// slowTTL makes the return wait stand out from the health-gated handover
// (threshold x period = 400 ms).
var slowTTL = timing{ttl: 10 * time.Second, renew: 3 * time.Second, retry: time.Second}

// TestGoneLeaderLeavesNoWaitBehind: a StatefulSet scaled down while its
// leader is the highest ordinal: the leader leaves "return/<ms>/a" on the
// lock and never comes back. After the wait, b or c takes over, and the
// return is dropped with that write. When the new leader's application
// turns unhealthy and it releases the lock, the other takes over within
// threshold x period, not a TTL more for a, which is gone. With
// -prefer-newest=false, no follower names itself over the return.
func TestGoneLeaderLeavesNoWaitBehind(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, slowTTL.gap())
	args := func(extra ...string) []string {
		return electionArgs(ns, slowTTL, append([]string{"-return-wait=" + slowTTL.ttl.String(), "-prefer-newest=false"}, extra...)...)
	}
	a := w.start("a", adminKubeconfig, args()...)
	w.waitLeader(settle, a)
	appB, appC := newFakeApp(t, true), newFakeApp(t, true)
	b := w.start("b", adminKubeconfig, args(appB.args()...)...)
	c := w.start("c", adminKubeconfig, args(appC.args()...)...)
	time.Sleep(2 * time.Second)
	if l := w.waitLeader(settle, a, b, c); l != a {
		t.Fatalf("%s leads, want a", l.id)
	}
	if _, err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	t.Logf("after a left, successor on the lock: %q", successorOn(t, ns))
	next := w.waitLeader(settle, b, c)
	other, app := c, appB
	if next == c {
		other, app = b, appC
	}
	if got := successorOn(t, ns); got != "" {
		t.Errorf("%s took the lock and left the return to a on it (successor %q)", next.id, got)
	}

	unhealthy := time.Now()
	app.healthy.Store(false)
	waitLeads(t, w, other, unhealthy)
	if s, ok := w.firstTrue(other, unhealthy); ok {
		t.Logf("%s led %s after %s's application turned unhealthy", other.id, s.to.Sub(unhealthy).Round(time.Millisecond), next.id)
	}
	w.tookOver(unhealthy, appHealthThreshold*appHealthPeriod+2*time.Second, other)
}
