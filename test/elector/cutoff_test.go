package elector

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestLeaderCutOff cuts the leader, at a random instant, off the API server
// (each participant has its own connection), trial after trial, on a
// ConfigMap lock, whose record keeps times in whole seconds as upstream's
// does. Every renewal must change the record at that precision, or the
// followers do not see it as a renewal, time the lease from an older one,
// and take over while the cut-off leader may still say it leads. The
// watcher fails the test on any takeover sooner than ttl - renew deadline
// after the old leader's last is_leader=true.
func TestLeaderCutOff(t *testing.T) {
	for _, tt := range []struct {
		name   string
		tm     timing
		args   []string
		trials int
	}{
		{
			name:   "ttl3s-renew2s-retry500ms",
			tm:     timing{ttl: 3 * time.Second, renew: 2 * time.Second, retry: 500 * time.Millisecond},
			trials: 6,
		},
		{
			// The defaults for the shortest ttl: renew deadline
			// max(ttl/3, 1.5s), retry period ttl/6.
			name:   "ttl2s-defaults",
			tm:     timing{ttl: 2 * time.Second, renew: 1500 * time.Millisecond, retry: 2 * time.Second / 6},
			args:   []string{"-ttl=2s"},
			trials: 6,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			api := apiHost(t)
			kubeconfig := accountWithRules(t, ns, electionRules(election.LockConfigMaps, electionName, true, false))
			args := []string{"-election=" + electionName, "-namespace=" + ns, "-lock-type=configmaps"}
			if tt.args != nil {
				args = append(args, tt.args...)
			} else {
				args = append(args, tt.tm.args()...)
			}
			w := newWatcher(t, tt.tm.gap())
			proxies := map[*participant]*proxy{}
			var ps []*participant
			for _, id := range []string{"a", "b", "c"} {
				px := newProxy(t, api)
				p := w.start(id, viaProxy(t, kubeconfig, px), args...)
				proxies[p] = px
				ps = append(ps, p)
			}
			leader := w.waitLeader(settle, ps...)
			for trial := range tt.trials {
				// A random instant within a second: renewals fall anywhere
				// relative to the record's whole seconds.
				time.Sleep(rand.N(time.Second))
				proxies[leader].cut()
				// Taken once the cut is done: no renewal sent later can
				// succeed.
				cut := time.Now()
				var others []*participant
				for _, p := range ps {
					if p != leader {
						others = append(others, p)
					}
				}
				w.waitLeader(settle, others...)
				for _, s := range w.samplesOf(leader) {
					if s.leader && !s.from.Before(cut.Add(tt.tm.renew)) {
						t.Errorf("trial %d: cut-off leader %s said is_leader=true at %s, past its renew deadline", trial, leader.id, s.from.Format(time.StampMilli))
						break
					}
				}
				proxies[leader].restore(t)
				// The old leader rejoins as a follower. Under load the new
				// one may have lost the lock since, so any one leader will do.
				leader = w.waitLeader(settle, ps...)
			}
		})
	}
}
