package election

import (
	"errors"
	"testing"
	"time"
)

// TestViewAt: what GET / answers, judged at the moment it is asked from
// the loop's state, case by case: leadership from the claim until the
// renew deadline after the last renewal sent, and only while the
// application is healthy; otherwise the leader a running lease names.
func TestViewAt(t *testing.T) {
	now := time.Now()
	const ttl, renewDeadline = 10 * time.Second, 3 * time.Second
	held := func(holder string, epoch uint64) *observation {
		obj := leaseKind.newObject()
		return &observation{object: obj, record: Record{HolderIdentity: holder, LeaseDurationSeconds: int(ttl / time.Second)}, epoch: epoch}
	}
	for _, tc := range []struct {
		name string
		edit func(e *Elector)
		want view
	}{{
		name: "nothing seen yet",
		edit: func(*Elector) {},
		want: view{},
	}, {
		name: "leading, renewed a moment ago",
		edit: func(e *Elector) { e.leading, e.renewedAt, e.epoch = true, now.Add(-time.Second), 7 },
		want: view{isLeader: true, leader: "me", epoch: 7},
	}, {
		name: "leading, at the renew deadline",
		edit: func(e *Elector) {
			e.leading, e.renewedAt, e.observed, e.observedAt = true, now.Add(-renewDeadline), held("me", 7), now.Add(-renewDeadline)
		},
		// Not leader, though its own lease still runs: another process
		// with its ID might, is_leader says which.
		want: view{leader: "me", epoch: 7},
	}, {
		name: "leading, before its claim (it made the lock)",
		edit: func(e *Elector) { e.leading, e.renewedAt, e.claimAt = true, now, now.Add(time.Second) },
		want: view{},
	}, {
		name: "leading, at its claim",
		edit: func(e *Elector) { e.leading, e.renewedAt, e.claimAt, e.epoch = true, now, now, 3 },
		want: view{isLeader: true, leader: "me", epoch: 3},
	}, {
		name: "leading, its application unhealthy",
		edit: func(e *Elector) { e.leading, e.renewedAt, e.health = true, now, &appHealth{} },
		want: view{},
	}, {
		name: "following a running lease",
		edit: func(e *Elector) { e.observed, e.observedAt = held("other", 9), now.Add(-ttl+time.Millisecond) },
		want: view{leader: "other", epoch: 9},
	}, {
		name: "following a lease run out",
		edit: func(e *Elector) { e.observed, e.observedAt = held("other", 9), now.Add(-ttl) },
		want: view{epoch: 9},
	}, {
		name: "a released lock",
		edit: func(e *Elector) { e.observed, e.observedAt = held("", 9), now },
		want: view{epoch: 9},
	}, {
		name: "a record that cannot be read",
		edit: func(e *Elector) {
			e.observed, e.observedAt = held("other", 0), now
			e.observed.readErr = errors.New("not a record")
		},
		want: view{},
	}, {
		name: "the lock deleted",
		edit: func(e *Elector) { e.observed, e.observedAt = &observation{}, now },
		want: view{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Elector{cfg: Config{ID: "me", TTL: ttl, RenewDeadline: renewDeadline}}
			tc.edit(e)
			if got := e.viewAt(now); got != tc.want {
				t.Errorf("viewAt = %+v, want %+v", got, tc.want)
			}
			if got := e.Status(); got.IsLeader && !tc.want.isLeader {
				t.Errorf("Status says leader a moment later: %+v", got)
			}
		})
	}
}
