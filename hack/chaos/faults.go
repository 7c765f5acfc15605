package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// The fault kinds, as the report names them.
const (
	kindKillLeader     = "SIGKILL leader"
	kindKillFollower   = "SIGKILL follower"
	kindTermLeader     = "SIGTERM leader"
	kindStopLeader     = "SIGSTOP leader past ttl"
	kindStopFollower   = "SIGSTOP follower"
	kindCutLeader      = "cut leader"
	kindCutFollower    = "cut follower"
	kindCutAll         = "cut everyone"
	kindFreezeAPI      = "SIGSTOP kube-apiserver"
	kindRestartAPI     = "restart kube-apiserver"
	kindDeleteLock     = "delete lock"
	kindGarbageLock    = "garbage lock record"
	kindJoin           = "fresh joiner"
	kindJoinNoWatch    = "fresh joiner without watch"
	kindReplace        = "replacement joiner"
	kindReplaceNoWatch = "replacement joiner without watch"
)

// faultKind is one kind of fault and how often the schedule picks it.
type faultKind struct {
	name   string
	weight int
	// global faults hit every election at once: they wait until no other
	// fault is under way, and none starts until they are measured.
	global bool
}

var faultKinds = []faultKind{
	{kindKillLeader, 3, false},
	{kindKillFollower, 1, false},
	{kindTermLeader, 2, false},
	{kindStopLeader, 2, false},
	{kindStopFollower, 1, false},
	{kindCutLeader, 3, false},
	{kindCutFollower, 1, false},
	{kindDeleteLock, 1, false},
	{kindGarbageLock, 1, false},
	{kindJoin, 1, false},
	{kindCutAll, 1, true},
	{kindFreezeAPI, 1, true},
	{kindRestartAPI, 1, true},
}

// The bounds the measures are held to, by the rule behind each.
const (
	boundCrash = "ttl + retry"
	boundStop  = "renew deadline"
	boundNone  = "-"
)

// measure is one timing of one fault.
type measure struct {
	name  string
	bound string
	limit time.Duration // the bound for this election; 0 when none
	value time.Duration
	// missing: it did not happen within the fault's observation window.
	missing bool
	// election and at (when the fault began) say where to look in the logs.
	election string
	at       time.Time
}

// harness runs the elections and injects the faults.
type harness struct {
	bin, logDir string
	cp          *controlPlane
	chk         *checker
	elections   []*electionState
	counter     requestCounter
	// slack is added to every fault's observation: time for a loaded
	// machine, never part of a bound.
	slack time.Duration
	// abort ends the schedule early: the control plane is gone.
	abort context.CancelFunc

	mu       sync.Mutex
	faults   map[string]int
	measures []measure
	all      []*participant
	errs     []string
	running  sync.WaitGroup
}

func (h *harness) count(kind string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults[kind]++
}

func (h *harness) add(m measure) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.measures = append(h.measures, m)
}

func (h *harness) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}

// join starts a participant in es, polled from before it can lead.
func (h *harness) join(ctx context.Context, es *electionState, noWatch bool) (*participant, error) {
	p, err := startParticipant(ctx, h.bin, h.logDir, h.cp, es, noWatch)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.all = append(h.all, p)
	h.mu.Unlock()
	h.chk.watch(p)
	return p, nil
}

// live lists the members of es that run (alive, not ended, not stopped).
func (es *electionState) live() []*participant {
	es.mu.Lock()
	defer es.mu.Unlock()
	var out []*participant
	for _, p := range es.members {
		if p.running() {
			out = append(out, p)
		}
	}
	return out
}

// leader is the one running member whose latest answer said it leads, or
// nil.
func (es *electionState) leader() *participant {
	var found *participant
	for _, p := range es.live() {
		if p.leading(100 * time.Millisecond) {
			if found != nil {
				return nil
			}
			found = p
		}
	}
	return found
}

func (es *electionState) follower(rng *rand.Rand) *participant {
	var out []*participant
	for _, p := range es.live() {
		if !p.leading(100 * time.Millisecond) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out[rng.IntN(len(out))]
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// window is how long after a fault ends its effects are measured: a crash
// failover's bound, a renew deadline, and slack.
func (h *harness) window(es *electionState) time.Duration {
	return es.ttl + es.retry() + es.renew() + h.slack
}

// newTermAfter is the earliest arrival of a first is_leader=true among the
// terms of members other than not that began at or after t0.
func newTermAfter(es *electionState, not *participant, t0 time.Time) (time.Time, bool) {
	es.mu.Lock()
	members := append([]*participant(nil), es.members...)
	es.mu.Unlock()
	var first time.Time
	for _, p := range members {
		if p == not {
			continue
		}
		for _, t := range p.allTerms() {
			if t.probe || t.firstFrom.Before(t0) {
				continue
			}
			if first.IsZero() || t.firstTo.Before(first) {
				first = t.firstTo
			}
		}
	}
	return first, !first.IsZero()
}

// stoppedAfter is when p's term that was under way at t0 ended: the
// arrival of its first is_leader=false answer, or its last true one if it
// died. ok is false while it still leads.
func stoppedAfter(p *participant, t0 time.Time) (time.Time, bool) {
	var cur *term
	for _, t := range p.allTerms() {
		if !t.probe && !t.firstFrom.After(t0) && (t.endTo.IsZero() || !t.endTo.Before(t0)) {
			cur = &t
		}
	}
	switch {
	case cur == nil:
		return t0, true
	case !cur.endTo.IsZero():
		return cur.endTo, true
	case !p.alive():
		return cur.lastTo, true
	}
	return time.Time{}, false
}

func (h *harness) measureNewLeader(name string, es *electionState, not *participant, from, t0 time.Time, bound string, limit time.Duration) {
	first, ok := newTermAfter(es, not, t0)
	m := measure{name: name, bound: bound, limit: limit, election: es.name, at: t0}
	if ok {
		m.value = first.Sub(from)
	} else {
		m.missing, m.value = true, time.Since(from)
	}
	h.add(m)
}

func (h *harness) measureStop(name string, p *participant, t0 time.Time, limit time.Duration) {
	stop, ok := stoppedAfter(p, t0)
	m := measure{name: name, bound: boundStop, limit: limit, election: p.e.name, at: t0}
	if ok {
		m.value = stop.Sub(t0)
	} else {
		m.missing, m.value = true, time.Since(t0)
	}
	h.add(m)
}

// replace starts a participant in place of one that ended, after delay.
func (h *harness) replace(ctx context.Context, es *electionState, rng *rand.Rand, delay time.Duration) {
	sleep(ctx, delay)
	if ctx.Err() != nil {
		return
	}
	noWatch := rng.IntN(3) == 0
	if _, err := h.join(ctx, es, noWatch); err != nil {
		h.fail("replacement in %s: %v", es.name, err)
		return
	}
	if noWatch {
		h.count(kindReplaceNoWatch)
	} else {
		h.count(kindReplace)
	}
}

// electionFault injects kind on es and measures it; it returns once the
// fault's observation window is over. ok is false when es had no target
// for it.
func (h *harness) electionFault(ctx context.Context, kind string, es *electionState, rng *rand.Rand) bool {
	ttl, renew, retry := es.ttl, es.renew(), es.retry()
	crash := ttl + retry
	switch kind {
	case kindKillLeader, kindTermLeader:
		l := es.leader()
		if l == nil {
			return false
		}
		sig := syscall.SIGKILL
		if kind == kindTermLeader {
			sig = syscall.SIGTERM
		}
		t0 := l.end(sig)
		h.count(kind)
		h.replace(ctx, es, rng, between(rng, 500*time.Millisecond, ttl))
		sleep(ctx, time.Until(t0.Add(h.window(es))))
		h.measureNewLeader(kind+": new leader", es, l, t0, t0, boundCrash, crash)
	case kindKillFollower:
		f := es.follower(rng)
		if f == nil || len(es.live()) < 2 {
			return false
		}
		f.end(syscall.SIGKILL)
		h.count(kind)
		h.replace(ctx, es, rng, between(rng, 500*time.Millisecond, ttl))
	case kindStopLeader, kindStopFollower:
		p := es.leader()
		d := ttl + between(rng, ttl/5, ttl)
		if kind == kindStopFollower {
			p, d = es.follower(rng), between(rng, 500*time.Millisecond, 2*ttl)
		}
		if p == nil {
			return false
		}
		t0, err := p.stop()
		if err != nil {
			h.fail("%s: %v", kind, err)
			p.cont()
			return true
		}
		h.count(kind)
		h.chk.probe(p)
		sleep(ctx, time.Until(t0.Add(d)))
		p.cont()
		if kind == kindStopLeader {
			sleep(ctx, time.Until(t0.Add(h.window(es))))
			h.measureNewLeader(kind+": new leader", es, p, t0, t0, boundCrash, crash)
		}
	case kindCutLeader, kindCutFollower:
		p := es.leader()
		if kind == kindCutFollower {
			p = es.follower(rng)
		}
		if p == nil {
			return false
		}
		mode := cutMode(rng.IntN(2))
		d := ttl + between(rng, 0, ttl)
		t0 := time.Now()
		p.relay.Cut(mode)
		name := fmt.Sprintf("%s (%s)", kind, mode)
		h.count(name)
		sleep(ctx, d)
		p.relay.Restore()
		if kind == kindCutLeader {
			sleep(ctx, time.Until(t0.Add(h.window(es))))
			h.measureStop(name+": old leader stops", p, t0, renew)
			h.measureNewLeader(name+": new leader", es, p, t0, t0, boundCrash, crash)
		}
	case kindDeleteLock, kindGarbageLock:
		l := es.leader()
		if l == nil {
			return false
		}
		t0 := time.Now()
		name, bound, limit := kind, boundCrash, crash
		var err error
		if kind == kindDeleteLock {
			// Someone sees the lock missing at once (watch) or within a
			// retry period, makes it, and leads a ttl after.
			err = h.deleteLock(ctx, es)
		} else {
			// Followers see the write at once or within a retry period,
			// count it held for the longer of its lease and the ttl, and
			// try within a retry period.
			var variant string
			var lease time.Duration
			variant, lease, err = h.garbleLock(ctx, es, rng)
			name += " (" + variant + ")"
			bound, limit = "max(ttl, written lease) + 2 retry", max(lease, ttl)+2*retry
		}
		if err != nil {
			h.fail("%s in %s: %v", kind, es.name, err)
			return true
		}
		h.count(name)
		sleep(ctx, time.Until(t0.Add(limit+renew+h.slack)))
		h.measureStop(name+": old leader stops", l, t0, renew)
		h.measureNewLeader(name+": leader again", es, nil, t0, t0, bound, limit)
	case kindJoin:
		if len(es.live()) > es.size {
			return false
		}
		noWatch := rng.IntN(2) == 0
		if _, err := h.join(ctx, es, noWatch); err != nil {
			h.fail("join %s: %v", es.name, err)
			return true
		}
		if noWatch {
			h.count(kindJoinNoWatch)
		} else {
			h.count(kindJoin)
		}
	}
	return true
}

// deleteLock deletes the election's lock object as an admin would.
func (h *harness) deleteLock(ctx context.Context, es *electionState) error {
	if es.lock == election.LockLeases {
		return h.cp.admin.CoordinationV1().Leases(es.namespace).Delete(ctx, es.name, metav1.DeleteOptions{})
	}
	return h.cp.admin.CoreV1().ConfigMaps(es.namespace).Delete(ctx, es.name, metav1.DeleteOptions{})
}

// garbleLock overwrites the lock's record as a confused admin might: a
// holder no participant has, with a random lease duration and times, or
// (ConfigMaps) an annotation that is not a record at all. It never writes a
// record without a holder: that is a release, which lets a follower take
// over at once while the leader still leads, by design.
func (h *harness) garbleLock(ctx context.Context, es *electionState, rng *rand.Rand) (string, time.Duration, error) {
	holder := fmt.Sprintf("garbage-%d", rng.IntN(1e6))
	dur := 1 + rng.IntN(int(2*es.ttl/time.Second))
	renewed := time.Now().Add(between(rng, -time.Hour, time.Hour)).Truncate(time.Second)
	if es.lock == election.LockLeases {
		lease, err := h.cp.admin.CoordinationV1().Leases(es.namespace).Get(ctx, es.name, metav1.GetOptions{})
		if err != nil {
			return "", 0, err
		}
		lease.Spec.HolderIdentity = ptr.To(holder)
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(dur))
		lease.Spec.RenewTime = &metav1.MicroTime{Time: renewed}
		lease.Spec.AcquireTime = nil
		_, err = h.cp.admin.CoordinationV1().Leases(es.namespace).Update(ctx, lease, metav1.UpdateOptions{})
		return "foreign holder", time.Duration(dur) * time.Second, err
	}
	cm, err := h.cp.admin.CoreV1().ConfigMaps(es.namespace).Get(ctx, es.name, metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	variant, lease := "not JSON", es.ttl
	value := "{" + strings.Repeat("garbage", 1+rng.IntN(3))
	if rng.IntN(2) == 0 {
		raw, _ := json.Marshal(election.Record{HolderIdentity: holder, LeaseDurationSeconds: dur, RenewTime: metav1.Time{Time: renewed}})
		variant, value, lease = "foreign holder", string(raw), time.Duration(dur)*time.Second
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[election.LeaderAnnotation] = value
	_, err = h.cp.admin.CoreV1().ConfigMaps(es.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	return variant, lease, err
}

// globalFault injects a fault on every election at once and measures it in
// each.
func (h *harness) globalFault(ctx context.Context, kind string, rng *rand.Rand) {
	leaders := map[*electionState]*participant{}
	var maxTTL time.Duration
	for _, es := range h.elections {
		leaders[es] = es.leader()
		maxTTL = max(maxTTL, es.ttl)
	}
	t0 := time.Now()
	var back time.Time // when the API server could be reached again
	name := kind
	switch kind {
	case kindCutAll:
		mode := cutMode(rng.IntN(2))
		name = fmt.Sprintf("%s (%s)", kind, mode)
		var cut []*participant
		for _, es := range h.elections {
			cut = append(cut, es.live()...)
		}
		for _, p := range cut {
			p.relay.Cut(mode)
		}
		sleep(ctx, between(rng, time.Second, maxTTL+2*time.Second))
		back = time.Now()
		for _, p := range cut {
			p.relay.Restore()
		}
	case kindFreezeAPI:
		if err := h.cp.Freeze(); err != nil {
			h.fail("%v", err)
			return
		}
		sleep(ctx, between(rng, time.Second, maxTTL))
		back = time.Now()
		if err := h.cp.Thaw(); err != nil {
			h.fail("SIGCONT kube-apiserver: %v", err)
		}
	case kindRestartAPI:
		_ = h.counter.scrape(ctx, h.cp.admin)
		rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		killed, up, ready, err := h.cp.Restart(rctx)
		cancel()
		h.counter.restarted()
		if err != nil {
			h.fail("%v", err)
			h.abort()
			return
		}
		t0, back = killed, up
		h.add(measure{name: name + ": kill to first answer", bound: boundNone, value: up.Sub(killed)})
		h.add(measure{name: name + ": kill to ready", bound: boundNone, value: ready.Sub(killed)})
	}
	h.count(name)
	var longest time.Duration
	for _, es := range h.elections {
		longest = max(longest, h.window(es))
	}
	sleep(ctx, time.Until(back.Add(longest)))
	for _, es := range h.elections {
		l := leaders[es]
		if l == nil {
			continue
		}
		// A leader is bound to stop only if the outage outlasted its
		// renew deadline; one that kept leading needs no new election.
		if back.Sub(t0) > es.renew()+200*time.Millisecond {
			h.measureStop(name+": leader stops", l, t0, es.renew())
		}
		if _, stopped := stoppedAfter(l, t0); stopped {
			h.measureNewLeader(name+": leader again after it ends", es, nil, back, t0, boundCrash, es.ttl+es.retry())
		}
	}
}

// schedule injects faults until end, from rng.
func (h *harness) schedule(ctx context.Context, end time.Time, rng *rand.Rand) {
	total := 0
	for _, k := range faultKinds {
		total += k.weight
	}
	busy := map[*electionState]bool{}
	var mu sync.Mutex
	for time.Now().Before(end) && ctx.Err() == nil {
		sleep(ctx, between(rng, 300*time.Millisecond, 1500*time.Millisecond))
		n := rng.IntN(total)
		var kind faultKind
		for _, k := range faultKinds {
			if n -= k.weight; n < 0 {
				kind = k
				break
			}
		}
		seed1, seed2 := rng.Uint64(), rng.Uint64()
		frng := rand.New(rand.NewPCG(seed1, seed2))
		if kind.global {
			h.running.Wait()
			if time.Now().After(end) {
				return
			}
			h.globalFault(ctx, kind.name, frng)
			continue
		}
		mu.Lock()
		var idle []*electionState
		for _, es := range h.elections {
			if !busy[es] {
				idle = append(idle, es)
			}
		}
		if len(idle) == 0 {
			mu.Unlock()
			continue
		}
		es := idle[rng.IntN(len(idle))]
		busy[es] = true
		mu.Unlock()
		h.running.Go(func() {
			defer func() {
				mu.Lock()
				busy[es] = false
				mu.Unlock()
			}()
			h.electionFault(ctx, kind.name, es, frng)
		})
	}
}
