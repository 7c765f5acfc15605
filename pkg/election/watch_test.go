package election

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// TestFreshWatchFirstEvent: a watch from no version starts with the lock
// as it was when the watch was served. That first event is the newest,
// whatever its number, unless a newer version was seen since the watch was
// sent: a participant that took a released lock as it started must not be
// told by its own watch's first event that the lock is released again.
func TestFreshWatchFirstEvent(t *testing.T) {
	lease := func(rv, holder string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{UID: "u", ResourceVersion: rv}}
		if holder != "" {
			l.Spec.HolderIdentity = &holder
		}
		return l
	}
	tests := []struct {
		name string
		// seen is observed before the watch is sent (-1 s), or after it
		// (+1 s); first is the watch's first event.
		seen       *coordinationv1.Lease
		seenAfter  bool
		first      *coordinationv1.Lease
		wantHolder string
	}{
		{"a write answered after the watch was sent stays", lease("20", "me"), true, lease("10", ""), "me"},
		{"a newer first event wins", lease("20", "me"), true, lease("30", "other"), "other"},
		{"a version seen before the watch was sent gives way", lease("20", "me"), false, lease("10", ""), ""},
		{"nothing seen before", nil, false, lease("10", "other"), "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Elector{cfg: Config{ID: "me"}, lock: &recordLock{namespace: "ns", name: "e", kind: leaseKind}, changed: make(chan struct{}, 1), metrics: NewMetrics()}
			sent := time.Now()
			if tt.seen != nil {
				e.observeNewest(e.lock.observe(tt.seen))
				at := sent.Add(-time.Second)
				if tt.seenAfter {
					at = sent.Add(time.Second)
				}
				e.observedAt = at
			}
			w := watch.NewFake()
			go func() {
				w.Add(tt.first)
				w.Stop()
			}()
			if _, n, ok := e.consume(w, "", sent); n != 1 || !ok {
				t.Fatalf("consume read %d events, ok %t", n, ok)
			}
			if got := e.observed.record.HolderIdentity; got != tt.wantHolder {
				t.Errorf("observed holder %q, want %q", got, tt.wantHolder)
			}
		})
	}
}
