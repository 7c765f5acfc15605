package routing

import (
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	ipOf := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	lease := func(rv uint64, ms int, holder string) event { return event{RV: rv, At: at(ms), Holder: holder} }
	slice := func(rv uint64, ms int, addrs ...string) event {
		return event{RV: rv, At: at(ms), Slice: true, Addresses: addrs, Endpoints: len(addrs)}
	}
	for _, tc := range []struct {
		name   string
		events []event
		want   []string // substrings of the violations, in order
		gaps   []time.Duration
		taken  []time.Duration
	}{{
		name: "a clean handover, received out of order",
		events: []event{
			lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), slice(4, 10), lease(3, 5, "a"),
			lease(5, 12, ""), lease(6, 15, "b"), slice(7, 20, "10.0.0.2"),
		},
		gaps:  []time.Duration{10 * time.Millisecond},
		taken: []time.Duration{3 * time.Millisecond},
	}, {
		name:   "released while listed",
		events: []event{lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), lease(3, 2, ""), lease(4, 3, "b"), slice(5, 4, "10.0.0.2")},
		want:   []string{"rv 3: the lock was released by a while the slice still listed 10.0.0.1"},
		taken:  []time.Duration{time.Millisecond},
	}, {
		name:   "released by a leader that never listed itself, over a crashed one's address",
		events: []event{lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), lease(3, 2, "b"), lease(4, 3, "")},
	}, {
		name:   "two addresses, and one not holding the lock",
		events: []event{lease(1, 0, "a"), slice(2, 1, "10.0.0.1", "10.0.0.2"), slice(3, 2, "10.0.0.2")},
		want:   []string{"rv 2: the slice lists 2 endpoints", "rv 2: the slice lists 10.0.0.1,10.0.0.2 while", `rv 3: the slice lists 10.0.0.2 while the lock is held by "a"`},
	}, {
		name: "a resync is not judged against a lock it may have missed",
		events: []event{
			lease(1, 0, "a"), {RV: 5, At: at(9), Slice: true, Resync: true, Addresses: []string{"10.0.0.2"}, Endpoints: 1},
			{RV: 6, At: at(10), Resync: true, Holder: "b"},
		},
	}, {
		name: "the old leader's write lands after the lock changed hands, before the new leader's",
		events: []event{
			lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), {RV: 3, At: at(2), Deleted: true}, lease(4, 3, "b"),
			slice(5, 4), slice(6, 5, "10.0.0.1"), slice(7, 6), slice(8, 7, "10.0.0.2"), slice(9, 8, "10.0.0.1"),
		},
		want: []string{`rv 9: the slice lists 10.0.0.1 while the lock is held by "b" (10.0.0.2), after "a"`},
		gaps: []time.Duration{time.Millisecond, time.Millisecond},
	}, {
		name: "an older epoch after a newer",
		events: []event{
			lease(1, 0, "a"), {RV: 2, At: at(1), Slice: true, Addresses: []string{"10.0.0.1"}, Endpoints: 1, Epoch: 7},
			{RV: 3, At: at(2), Slice: true, Addresses: []string{"10.0.0.1"}, Endpoints: 1, Epoch: 6},
		},
		want: []string{"rv 3: the slice lists 10.0.0.1 at epoch 6, after a listing at epoch 7"},
	}, {
		name: "the old leader's write lands after a resync of the Lease shows the new holder, before the new holder's own",
		events: []event{
			lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), slice(3, 2),
			{RV: 5, At: at(4), Resync: true, Holder: "b"}, slice(6, 5, "10.0.0.1"), slice(7, 6, "10.0.0.2"),
		},
		gaps: []time.Duration{3 * time.Millisecond},
	}, {
		name: "the old leader's write lands while a holder without an address (not a participant here) holds the lock",
		events: []event{
			lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), slice(3, 2), lease(4, 3, "x"), slice(5, 4, "10.0.0.1"),
		},
		gaps: []time.Duration{2 * time.Millisecond},
	}, {
		name: "a write two terms stale",
		events: []event{
			lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), lease(3, 2, "b"), lease(4, 3, "c"), slice(5, 4, "10.0.0.1"),
		},
		want: []string{`rv 5: the slice lists 10.0.0.1 while the lock is held by "c" (), after "b"`},
	}, {
		name:   "a deleted lock is not a release",
		events: []event{lease(1, 0, "a"), slice(2, 1, "10.0.0.1"), {RV: 3, At: at(2), Deleted: true}, lease(4, 3, "b")},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Log{events: tc.events}
			r := l.Check(ipOf)
			if len(r.Violations) != len(tc.want) {
				t.Fatalf("violations:\n%s\nwant %d", strings.Join(r.Violations, "\n"), len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(r.Violations[i], w) {
					t.Errorf("violation %d: %s, want %s", i, r.Violations[i], w)
				}
			}
			if len(r.Gaps) != len(tc.gaps) || len(r.Handovers) != len(tc.taken) {
				t.Fatalf("gaps %v, handovers %v; want %v, %v", r.Gaps, r.Handovers, tc.gaps, tc.taken)
			}
			for i := range tc.gaps {
				if r.Gaps[i] != tc.gaps[i] {
					t.Errorf("gap %d: %s, want %s", i, r.Gaps[i], tc.gaps[i])
				}
			}
			for i := range tc.taken {
				if r.Handovers[i] != tc.taken[i] {
					t.Errorf("handover %d: %s, want %s", i, r.Handovers[i], tc.taken[i])
				}
			}
		})
	}
}
