package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTally(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	answers := []answer{
		// 0: one leader, all answered.
		{0, "a0", true, true, at(5)}, {0, "a1", true, false, at(9)}, {0, "a2", true, false, at(7)},
		// 1: two leaders.
		{1, "b0", true, true, at(1)}, {1, "b1", true, true, at(2)},
		// 2: a leader, but one participant does not answer yet.
		{2, "c0", true, true, at(3)}, {2, "c1", false, false, at(4)},
		// 3: no leader.
		{3, "d0", true, false, at(6)}, {3, "d1", true, false, at(8)},
	}
	want := []verdict{
		{elected: true, leader: "a0", at: at(9)},
		{at: at(2)},
		{at: at(4)},
		{at: at(8)},
	}
	if diff := cmp.Diff(want, tally(4, answers), cmp.AllowUnexported(verdict{})); diff != "" {
		t.Errorf("tally (-want +got):\n%s", diff)
	}
}
