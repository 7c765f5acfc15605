package elector

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestLockReplacedWhileLeading deletes the lock, or overwrites it with
// another holder, under a leader: it stops leading (and says so in an
// Event) within its renew deadline, and nobody leads again until a full
// lease after the change.
func TestLockReplacedWhileLeading(t *testing.T) {
	for _, tt := range []struct {
		name   string
		lock   election.LockType
		change func(t *testing.T, ns string)
	}{
		{"lease-deleted", election.LockLeases, func(t *testing.T, ns string) {
			if err := env.Client.CoordinationV1().Leases(ns).Delete(ctxFor(t, apiTimeout), electionName, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"lease-overwritten", election.LockLeases, func(t *testing.T, ns string) {
			ctx := ctxFor(t, apiTimeout)
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				lease, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, electionName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				lease.Spec = leaseSpec(intruder())
				_, err = env.Client.CoordinationV1().Leases(ns).Update(ctx, lease, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"configmap-overwritten", election.LockConfigMaps, func(t *testing.T, ns string) {
			ctx := ctxFor(t, apiTimeout)
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, electionName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				b, _ := json.Marshal(intruder())
				cm.Annotations[election.LeaderAnnotation] = string(b)
				_, err = env.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			kubeconfig := accountWithRules(t, ns, electionRules(tt.lock, electionName, true, false))
			w := newWatcher(t, std.gap())
			args := electionArgs(ns, std, "-lock-type="+string(tt.lock))
			ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...)}
			leader := w.waitLeader(settle, ps...)

			changed := time.Now()
			tt.change(t, ns)
			eventually(t, std.renew+loadSlack, func() error {
				if s, ok := w.latest(leader, changed); !ok || s.leader {
					return errNotYet(leader.id + " still leads")
				}
				return nil
			})
			for _, s := range w.samplesOf(leader) {
				if s.leader && !s.from.Before(changed.Add(std.renew)) {
					t.Errorf("%s said is_leader=true at %s, past its renew deadline after the lock changed", leader.id, s.from.Format(time.StampMilli))
					break
				}
			}
			waitEventPrefix(t, ns, leader.id+" stopped leading")
			w.waitLeader(settle, ps...)
			for _, p := range ps {
				for _, s := range w.samplesOf(p) {
					if s.leader && !s.sent.Before(changed.Add(std.renew)) {
						if d := s.to.Sub(changed); d < std.ttl {
							t.Errorf("%s led %s after the lock changed, before a full lease of %s", p.id, d.Round(time.Millisecond), std.ttl)
						}
						break
					}
				}
			}
			if !strings.Contains(leader.Logs(), "stopped leading") {
				t.Errorf("%s did not log that it stopped leading", leader.id)
			}
		})
	}
}

// intruder is a record another holder, not a participant, writes now.
func intruder() election.Record {
	now := metav1.NewTime(time.Now())
	return election.Record{HolderIdentity: "intruder", LeaseDurationSeconds: 4, AcquireTime: now, RenewTime: now, LeaderTransitions: 9}
}
