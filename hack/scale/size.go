package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// size is one measurement's topology.
type size struct {
	elections, participants int
}

func (s size) String() string { return fmt.Sprintf("%dx%d", s.elections, s.participants) }

// parseSizes reads "10x3,100x3": elections x participants.
func parseSizes(s string) ([]size, error) {
	var out []size
	for part := range strings.SplitSeq(s, ",") {
		e, p, ok := strings.Cut(strings.TrimSpace(part), "x")
		elections, err1 := strconv.Atoi(e)
		participants, err2 := strconv.Atoi(p)
		if !ok || err1 != nil || err2 != nil || elections < 1 || participants < 1 {
			return nil, fmt.Errorf("-sizes: %q is not ELECTIONSxPARTICIPANTS with both at least 1 (example: 100x3)", part)
		}
		out = append(out, size{elections, participants})
	}
	return out, nil
}

// lockMix is the lock type of each election: one type, or Leases and
// ConfigMaps taking turns.
type lockMix string

const mixed lockMix = "mixed"

func parseLockMix(s string) (lockMix, error) {
	switch m := lockMix(s); m {
	case mixed, lockMix(election.LockLeases), lockMix(election.LockConfigMaps):
		return m, nil
	}
	return "", fmt.Errorf("-lock: %q is not leases, configmaps or mixed", s)
}

// of is the lock type of election i.
func (m lockMix) of(i int) election.LockType {
	if m != mixed {
		return election.LockType(m)
	}
	if i%2 == 0 {
		return election.LockLeases
	}
	return election.LockConfigMaps
}

func (m lockMix) String() string {
	if m == mixed {
		return "half leases, half configmaps"
	}
	return "all " + string(m)
}
