package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestTopology checks that the elections cover the ranges the issue asks
// for, ends included, whatever the seed: ttls from 2 s to 10 s, sizes from
// 2 to the most, and every lock type.
func TestTopology(t *testing.T) {
	for _, tc := range []struct {
		n, maxSize int
		ttls       []time.Duration
		sizes      []int
	}{
		{6, 10, seconds(2, 4, 5, 7, 8, 10), []int{2, 4, 5, 7, 8, 10}},
		{3, 3, seconds(2, 6, 10), []int{2, 3, 3}},
		{1, 10, seconds(2), []int{2}},
	} {
		for seed := range uint64(5) {
			specs := topology(rand.New(rand.NewPCG(seed, seed)), tc.n, tc.maxSize)
			var ttls []time.Duration
			var sizes []int
			locks := map[election.LockType]int{}
			for _, s := range specs {
				ttls, sizes = append(ttls, s.ttl), append(sizes, s.size)
				locks[s.lock]++
			}
			slices.Sort(ttls)
			slices.Sort(sizes)
			if diff := cmp.Diff(tc.ttls, ttls); diff != "" {
				t.Errorf("%d elections, seed %d: ttls (-want +got):\n%s", tc.n, seed, diff)
			}
			if diff := cmp.Diff(tc.sizes, sizes); diff != "" {
				t.Errorf("%d elections, seed %d: sizes (-want +got):\n%s", tc.n, seed, diff)
			}
			if want := min(tc.n, len(election.LockTypes)); len(locks) != want {
				t.Errorf("%d elections, seed %d: lock types %v, want %d of them", tc.n, seed, locks, want)
			}
		}
	}
}

// TestShuffled checks that a deck holds every kind once, in an order that
// depends on the seed.
func TestShuffled(t *testing.T) {
	orders := map[string]bool{}
	for seed := range uint64(20) {
		deck := shuffled(rand.New(rand.NewPCG(seed, 1)), electionKinds)
		if diff := cmp.Diff(slices.Sorted(slices.Values(electionKinds)), slices.Sorted(slices.Values(deck))); diff != "" {
			t.Fatalf("seed %d: the deck is not every kind once (-want +got):\n%s", seed, diff)
		}
		orders[deck[0]+deck[1]+deck[2]] = true
	}
	if len(orders) < 10 {
		t.Errorf("20 seeds dealt only %d different decks", len(orders))
	}
}

func seconds(s ...int) []time.Duration {
	var out []time.Duration
	for _, n := range s {
		out = append(out, time.Duration(n)*time.Second)
	}
	return out
}
