package elector

import (
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// TestDuplicateID runs two processes with one -id, which a misconfigured
// Deployment or a restarted pod produces. A record holding our ID that this
// process did not write belongs to another holder: a follower waits for it
// to expire, a leader that sees it steps down, and a restarted process
// waits out its previous lease unless that was released. Never may two of
// them say is_leader=true at once.
func TestDuplicateID(t *testing.T) {
	t.Run("second-process", func(t *testing.T) {
		ns := env.Namespace(t)
		kubeconfig := serviceAccountKubeconfig(t, ns, false)
		w := newWatcher(t, std.gap())
		first := w.start("same", kubeconfig, electionArgs(ns, std)...)
		w.waitLeader(settle, first)
		second := w.start("same", kubeconfig, electionArgs(ns, std)...)
		// The first keeps renewing, so the second never leads.
		w.noLeaderFor(2*std.ttl, second)
		if s, ok := w.latest(first, time.Now().Add(-time.Second)); !ok || !s.leader {
			t.Errorf("the first process stopped leading")
		}
		// Killed, it exits with an error: no news.
		_, _ = first.stop(t, syscall.SIGKILL)
		w.waitLeader(settle, second)
	})

	t.Run("foreign-renewal", func(t *testing.T) {
		ns := env.Namespace(t)
		w := newWatcher(t, std.gap())
		p := w.start("same", adminKubeconfig, electionArgs(ns, std)...)
		// Another process with our ID renews the lease while p leads. Under
		// load p may also step down for want of a timely renewal; then the
		// write is made again once it leads.
		var written time.Time
		for attempt := 1; ; attempt++ {
			w.waitLeader(settle, p)
			logged := strings.Count(p.Logs(), "another process")
			written = renewAs(t, ns)
			eventually(t, std.renew+loadSlack, func() error {
				if s, ok := w.latest(p, written); !ok || s.leader {
					return errNotYet("still leads after another process renewed its lease")
				}
				return nil
			})
			if strings.Count(p.Logs(), "another process") > logged {
				break
			}
			if attempt == 3 {
				t.Fatalf("3 times the leader stepped down but never for another process with its ID:\n%s", p.Logs())
			}
		}
		waitEventPrefix(t, ns, "same stopped leading")
		if v := metricValue(t, p, "elector_duplicate_id_total"); v < 1 {
			t.Errorf("elector_duplicate_id_total = %v, want at least 1", v)
		}
		waitEventMatch(t, ns, "a Warning DuplicateID", func(e corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning && e.Reason == "DuplicateID" && strings.Contains(e.Message, `"same"`)
		})
		// Nobody renews that lease: it runs out, and p leads again no sooner.
		w.waitLeader(settle, p)
		took, ok := w.nextTerm(p, written)
		if !ok {
			t.Fatal("no new term after the step-down")
		}
		if d := took.to.Sub(written); d < std.ttl {
			t.Errorf("led again %s after the other process's renewal, before its lease of %s ran out", d.Round(time.Millisecond), std.ttl)
		}
	})

	t.Run("restart-after-crash", func(t *testing.T) {
		ns := env.Namespace(t)
		kubeconfig := serviceAccountKubeconfig(t, ns, false)
		w := newWatcher(t, std.gap())
		before := w.start("same", kubeconfig, electionArgs(ns, std)...)
		w.waitLeader(settle, before)
		if _, err := before.stop(t, syscall.SIGKILL); err == nil {
			t.Fatal("SIGKILL: exited cleanly?")
		}
		after := w.start("same", kubeconfig, electionArgs(ns, std)...)
		w.waitLeader(settle, after)
		took, _ := w.firstTrue(after, after.started)
		if d := took.to.Sub(after.started); d < std.ttl {
			t.Errorf("the restarted process led %s after it started, before its previous lease of %s ran out", d.Round(time.Millisecond), std.ttl)
		}
	})

	t.Run("restart-after-release", func(t *testing.T) {
		ns := env.Namespace(t)
		kubeconfig := serviceAccountKubeconfig(t, ns, false)
		w := newWatcher(t, std.gap())
		before := w.start("same", kubeconfig, electionArgs(ns, std)...)
		w.waitLeader(settle, before)
		if _, err := before.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		after := w.start("same", kubeconfig, electionArgs(ns, std)...)
		// A released lock is free: no lease to wait out. Waiting one would
		// take a ttl from the start.
		w.waitLeader(settle, after)
		w.tookOver(after.started, std.ttl, after)
	})
}

// renewAs renews the lease of the election in ns as another process would
// that has the holder's ID, and returns when the write was sent.
func renewAs(t *testing.T, ns string) time.Time {
	t.Helper()
	ctx := ctxFor(t, apiTimeout)
	var written time.Time
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, electionName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now().Add(time.Second)}
		written = time.Now()
		_, err = env.Client.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("renew as another process: %v", err)
	}
	return written
}
