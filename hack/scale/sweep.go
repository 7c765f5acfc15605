package main

import (
	"context"
	"sync"
	"time"
)

// answer is one participant's GET / in a sweep.
type answer struct {
	election int
	id       string
	ok       bool // it answered
	leader   bool // is_leader=true
	at       time.Time
}

// sweepWorkers bounds the GET / requests in flight: enough to ask a few
// hundred participants within a fraction of a second, few enough not to
// crowd the electors off the machine's cores.
const sweepWorkers = 16

// sweep asks every participant GET / once.
func sweep(ctx context.Context, electors []*elector) []answer {
	out := make([]answer, len(electors))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(sweepWorkers, len(electors)) {
		wg.Go(func() {
			for i := range next {
				p := electors[i]
				st, ok := p.status(ctx)
				out[i] = answer{election: p.election, id: p.id, ok: ok, leader: ok && st.IsLeader, at: time.Now()}
			}
		})
	}
	for i := range electors {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// verdict is one election in a sweep.
type verdict struct {
	// elected: every participant answered and exactly one is leader.
	elected bool
	leader  string
	// at is when the last of its participants answered.
	at time.Time
}

// tally judges each of n elections from a sweep's answers.
func tally(n int, answers []answer) []verdict {
	out := make([]verdict, n)
	leaders := make([]int, n)
	answered := make([]bool, n)
	for i := range answered {
		answered[i] = true
	}
	for _, a := range answers {
		v := &out[a.election]
		if a.at.After(v.at) {
			v.at = a.at
		}
		if !a.ok {
			answered[a.election] = false
		}
		if a.leader {
			leaders[a.election]++
			v.leader = a.id
		}
	}
	for i := range out {
		out[i].elected = answered[i] && leaders[i] == 1
		if !out[i].elected {
			out[i].leader = ""
		}
	}
	return out
}
