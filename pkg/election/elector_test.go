package election

import (
	"errors"
	"testing"
	"time"
)

// TestLeaseLeft: how long a follower waits before it may take the lock, by
// what it last observed: nothing, until the lease of the holder named runs
// out from when it was observed, never shorter than its own TTL.
func TestLeaseLeft(t *testing.T) {
	now := time.Now()
	const ttl = 10 * time.Second
	held := func(holder string, leaseSeconds int) *observation {
		return &observation{object: leaseKind.newObject(), record: Record{HolderIdentity: holder, LeaseDurationSeconds: leaseSeconds}}
	}
	garbled := held("", 0)
	garbled.readErr = errors.New("not a record")
	for _, tc := range []struct {
		name       string
		obs        *observation
		observedAt time.Time
		want       time.Duration
	}{
		{"nothing seen: read it now", nil, now, 0},
		{"the lock is missing: make it now", &observation{}, now, 0},
		{"released", held("", 1), now, 0},
		{"held, just renewed", held("other", 10), now, ttl},
		{"held, renewed 4s ago", held("other", 10), now.Add(-4 * time.Second), 6 * time.Second},
		{"held, run out", held("other", 10), now.Add(-11 * time.Second), -time.Second},
		{"a longer lease than the TTL", held("other", 30), now.Add(-4 * time.Second), 26 * time.Second},
		{"a shorter lease than the TTL: the TTL", held("other", 1), now, ttl},
		{"its own ID, written by another process", held("me", 10), now, ttl},
		{"a record that cannot be read: held for the TTL", garbled, now, ttl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Elector{cfg: Config{ID: "me", TTL: ttl}}
			if got := e.leaseLeft(tc.obs, tc.observedAt, now); got != tc.want {
				t.Errorf("leaseLeft = %s, want %s", got, tc.want)
			}
		})
	}
}
