package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// The fault kinds, as the report names them. Each is one card of the
// schedule's deck.
const (
	kindKillLeader   = "SIGKILL leader"
	kindKillFollower = "SIGKILL follower"
	kindTermLeader   = "SIGTERM leader"
	kindStopLeader   = "SIGSTOP leader past ttl"
	kindStopFollower = "SIGSTOP follower"
	kindCutLeader    = "cut leader"
	kindCutFollower  = "cut follower"
	kindDeleteLock   = "delete lock"
	kindGarbageLock  = "garbage lock record"
	kindJoin         = "fresh joiner"
	kindJoinNoWatch  = "fresh joiner without watch"
	kindCutAll       = "cut everyone"
	kindFreezeAPI    = "SIGSTOP kube-apiserver"
	kindRestartAPI   = "restart kube-apiserver"
	kindRestartEtcd  = "restart etcd"
)

// The joiners that take the place of a participant that ended. They are
// not cards of the deck: a kill brings them.
const (
	kindReplace        = "replacement joiner"
	kindReplaceNoWatch = "replacement joiner without watch"
)

// electionKinds strike one election; globalKinds strike every election at
// once.
var (
	electionKinds = []string{
		kindKillLeader, kindKillFollower, kindTermLeader, kindStopLeader, kindStopFollower,
		kindCutLeader, kindCutFollower, kindDeleteLock, kindGarbageLock, kindJoin, kindJoinNoWatch,
	}
	globalKinds = []string{kindCutAll, kindFreezeAPI, kindRestartAPI, kindRestartEtcd}
)

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
	cp          *cluster
	chk         *checker
	elections   []*electionState
	counter     requestCounter
	// slack is added to every fault's observation: time for a loaded
	// machine, never part of a bound.
	slack time.Duration
	// abort ends the schedule early: the control plane is gone.
	abort context.CancelFunc

	mu sync.Mutex
	// faults counts injections by kind; variants by kind and how it was
	// done (the cut's mode, the garbage written).
	faults, variants map[string]int
	measures         []measure
	all              []*participant
	errs             []string
	rounds           int
}

// count records an injection of kind, done as variant (the kind itself
// when it has no variants).
func (h *harness) count(kind, variant string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults[kind]++
	h.variants[variant]++
}

// short lists the kinds of the deck injected fewer than min times.
func (h *harness) short(min int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, kind := range append(slices.Clone(electionKinds), globalKinds...) {
		if h.faults[kind] < min {
			out = append(out, kind)
		}
	}
	return out
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

// await waits until done reports true, or until deadline. A fault ends as
// soon as what it measures happened: the schedule then moves on, and a
// 30-minute run injects every kind more often.
func await(ctx context.Context, deadline time.Time, done func() bool) {
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		sleep(ctx, 20*time.Millisecond)
	}
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
	case p.Exited():
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

// replace starts a participant in place of one that ended, after delay,
// unless the election has as many as it started with: the fresh joiners
// add participants and the kills take them away, and the size stays
// near where it began.
func (h *harness) replace(ctx context.Context, es *electionState, rng *rand.Rand, delay time.Duration) {
	sleep(ctx, delay)
	if ctx.Err() != nil || len(es.live()) >= es.size {
		return
	}
	noWatch := rng.IntN(3) == 0
	if _, err := h.join(ctx, es, noWatch); err != nil {
		h.fail("replacement in %s: %v", es.name, err)
		return
	}
	if noWatch {
		h.count(kindReplaceNoWatch, kindReplaceNoWatch)
	} else {
		h.count(kindReplace, kindReplace)
	}
}

// electionFault injects kind on es and measures it; it returns once what
// it measures happened or the fault's observation window is over. ok is
// false when es had no target for it.
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
		h.count(kind, kind)
		h.replace(ctx, es, rng, between(rng, 500*time.Millisecond, ttl))
		await(ctx, t0.Add(h.window(es)), func() bool { _, ok := newTermAfter(es, l, t0); return ok })
		h.measureNewLeader(kind+": new leader", es, l, t0, t0, boundCrash, crash)
	case kindKillFollower:
		f := es.follower(rng)
		if f == nil || len(es.live()) < 2 {
			return false
		}
		f.end(syscall.SIGKILL)
		h.count(kind, kind)
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
		h.count(kind, kind)
		h.chk.probe(p)
		sleep(ctx, time.Until(t0.Add(d)))
		p.cont()
		if kind == kindStopLeader {
			await(ctx, t0.Add(h.window(es)), func() bool { _, ok := newTermAfter(es, p, t0); return ok })
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
		h.count(kind, name)
		sleep(ctx, d)
		p.relay.Restore()
		if kind == kindCutLeader {
			await(ctx, t0.Add(h.window(es)), func() bool { return stoppedAndFollowed(es, p, p, t0) })
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
		h.count(kind, name)
		await(ctx, t0.Add(limit+renew+h.slack), func() bool { return stoppedAndFollowed(es, l, nil, t0) })
		h.measureStop(name+": old leader stops", l, t0, renew)
		h.measureNewLeader(name+": leader again", es, nil, t0, t0, bound, limit)
	case kindJoin, kindJoinNoWatch:
		if _, err := h.join(ctx, es, kind == kindJoinNoWatch); err != nil {
			h.fail("join %s: %v", es.name, err)
			return true
		}
		h.count(kind, kind)
	}
	return true
}

// stoppedAndFollowed reports whether p's term under way at t0 ended and a
// participant other than not began a term after t0.
func stoppedAndFollowed(es *electionState, p, not *participant, t0 time.Time) bool {
	_, stopped := stoppedAfter(p, t0)
	_, followed := newTermAfter(es, not, t0)
	return stopped && followed
}

// deleteLock deletes the election's lock object as an admin would.
func (h *harness) deleteLock(ctx context.Context, es *electionState) error {
	switch es.lock {
	case election.LockLeases:
		return h.cp.admin.CoordinationV1().Leases(es.namespace).Delete(ctx, es.name, metav1.DeleteOptions{})
	case election.LockEndpoints:
		return h.cp.admin.CoreV1().Endpoints(es.namespace).Delete(ctx, es.name, metav1.DeleteOptions{})
	}
	return h.cp.admin.CoreV1().ConfigMaps(es.namespace).Delete(ctx, es.name, metav1.DeleteOptions{})
}

// garbleLock overwrites the lock's record as a confused admin might: a
// holder no participant has, with a random lease duration and times, or
// (ConfigMaps and Endpoints) an annotation that is not a record at all. It
// never writes a record without a holder: that is a release, which lets a
// follower take over at once while the leader still leads, by design. A
// leader renews between the admin's read and write now and then: the
// admin then reads again and writes the same garbage.
func (h *harness) garbleLock(ctx context.Context, es *electionState, rng *rand.Rand) (variant string, lease time.Duration, err error) {
	write := h.garbage(es, rng)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		variant, lease, err = write(ctx)
		return err
	})
	return variant, lease, err
}

// garbage draws the garbage for es from rng, and returns what writes it
// over the lock's record.
func (h *harness) garbage(es *electionState, rng *rand.Rand) func(context.Context) (string, time.Duration, error) {
	holder := fmt.Sprintf("garbage-%d", rng.IntN(1e6))
	dur := 1 + rng.IntN(int(2*es.ttl/time.Second))
	renewed := time.Now().Add(between(rng, -time.Hour, time.Hour)).Truncate(time.Second)
	if es.lock == election.LockLeases {
		return func(ctx context.Context) (string, time.Duration, error) {
			leases := h.cp.admin.CoordinationV1().Leases(es.namespace)
			lease, err := leases.Get(ctx, es.name, metav1.GetOptions{})
			if err != nil {
				return "", 0, err
			}
			lease.Spec.HolderIdentity = ptr.To(holder)
			lease.Spec.LeaseDurationSeconds = ptr.To(int32(dur))
			lease.Spec.RenewTime = &metav1.MicroTime{Time: renewed}
			lease.Spec.AcquireTime = nil
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
			return "foreign holder", time.Duration(dur) * time.Second, err
		}
	}
	variant, lease := "not JSON", es.ttl
	value := "{" + strings.Repeat("garbage", 1+rng.IntN(3))
	if rng.IntN(2) == 0 {
		raw, _ := json.Marshal(election.Record{HolderIdentity: holder, LeaseDurationSeconds: dur, RenewTime: metav1.Time{Time: renewed}})
		variant, value, lease = "foreign holder", string(raw), time.Duration(dur)*time.Second
	}
	return func(ctx context.Context) (string, time.Duration, error) {
		var err error
		if es.lock == election.LockEndpoints {
			err = annotateLock(ctx, h.cp.admin.CoreV1().Endpoints(es.namespace), es.name, value)
		} else {
			err = annotateLock(ctx, h.cp.admin.CoreV1().ConfigMaps(es.namespace), es.name, value)
		}
		return variant, lease, err
	}
}

// lockClient is what annotateLock needs of a typed client: the Endpoints'
// or the ConfigMaps'.
type lockClient[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// annotateLock reads the lock object name with c and writes it back with
// value as its leader annotation.
func annotateLock[T metav1.Object](ctx context.Context, c lockClient[T], name, value string) error {
	obj, err := c.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[election.LeaderAnnotation] = value
	obj.SetAnnotations(annotations)
	_, err = c.Update(ctx, obj, metav1.UpdateOptions{})
	return err
}

// globalFault injects a fault on every election at once and measures it in
// each. No election fault is under way meanwhile.
func (h *harness) globalFault(ctx context.Context, kind string, rng *rand.Rand) {
	leaders := map[*electionState]*participant{}
	var longestTTL time.Duration
	for _, es := range h.elections {
		leaders[es] = es.leader()
		longestTTL = max(longestTTL, es.ttl)
	}
	t0 := time.Now()
	var back time.Time // when the API server could serve the electors again
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
		sleep(ctx, between(rng, time.Second, longestTTL+2*time.Second))
		back = time.Now()
		for _, p := range cut {
			p.relay.Restore()
		}
	case kindFreezeAPI:
		if err := h.cp.env.Freeze(); err != nil {
			h.fail("%v", err)
			return
		}
		sleep(ctx, between(rng, time.Second, longestTTL))
		back = time.Now()
		if err := h.cp.env.Thaw(); err != nil {
			h.fail("SIGCONT kube-apiserver: %v", err)
		}
	case kindRestartAPI, kindRestartEtcd:
		restart := h.cp.env.RestartAPIServer
		if kind == kindRestartEtcd {
			restart = h.cp.env.RestartEtcd
		} else {
			_ = h.counter.scrape(ctx, h.cp.admin)
		}
		rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		r, err := restart(rctx)
		cancel()
		if kind == kindRestartAPI {
			h.counter.restarted()
		}
		if err != nil {
			h.fail("%v", err)
			h.abort()
			return
		}
		// The outage ends when kube-apiserver serves an elector again: a
		// restarted one answers /livez before it authenticates and reads,
		// behind a restarted etcd it answers all along but serves nothing
		// until it reads from the new etcd, and it serves the admin
		// (system:masters) seconds before its RBAC lets an elector in.
		t0, back = r.Killed, h.servesElector(ctx, h.elections[0], r.Ready.Add(90*time.Second))
		h.add(measure{name: name + ": kill to serving an elector", bound: boundNone, value: back.Sub(r.Killed)})
		h.add(measure{name: name + ": kill to first answer", bound: boundNone, value: r.Up.Sub(r.Killed)})
		h.add(measure{name: name + ": kill to ready", bound: boundNone, value: r.Ready.Sub(r.Killed)})
	}
	h.count(kind, name)
	var longest time.Duration
	for _, es := range h.elections {
		longest = max(longest, h.window(es))
	}
	// A leader is bound to stop only if the outage outlasted its renew
	// deadline; one that kept leading needs no new election. Until a
	// retry period after the API server is back, a leader may still stop.
	boundToStop := func(es *electionState) bool { return back.Sub(t0) > es.renew()+200*time.Millisecond }
	await(ctx, back.Add(longest), func() bool {
		for es, l := range leaders {
			if l == nil {
				continue
			}
			_, stopped := stoppedAfter(l, t0)
			_, followed := newTermAfter(es, nil, t0)
			settled := !boundToStop(es) && time.Since(back) > es.retry()+es.renew()
			replaced, kept := stopped && followed, settled && !stopped
			if !replaced && !kept {
				return false
			}
		}
		return true
	})
	for _, es := range h.elections {
		l := leaders[es]
		if l == nil {
			continue
		}
		if boundToStop(es) {
			h.measureStop(name+": leader stops", l, t0, es.renew())
		}
		if _, stopped := stoppedAfter(l, t0); stopped {
			h.measureNewLeader(name+": leader again after it ends", es, nil, back, t0, boundCrash, es.ttl+es.retry())
		}
	}
}

// servesElector returns when kube-apiserver first serves es's lock to es's
// elector account, or deadline.
func (h *harness) servesElector(ctx context.Context, es *electionState, deadline time.Time) time.Time {
	cfg := rest.AnonymousClientConfig(h.cp.cfg)
	cfg.BearerToken = es.token
	cfg.Timeout = time.Second
	client, err := rest.RESTClientFor(withScheme(cfg))
	for err == nil && time.Now().Before(deadline) && ctx.Err() == nil {
		// A GET of the lock by name, the right every elector account has;
		// a lock that is not there (yet) was still served.
		if _, err := client.Get().AbsPath(lockPath(es)).DoRaw(ctx); err == nil || apierrors.IsNotFound(err) {
			return time.Now()
		}
		sleep(ctx, 20*time.Millisecond)
	}
	if err != nil {
		h.fail("a client for %s's elector account: %v", es.name, err)
	}
	return time.Now()
}

// lockPath is the API path of es's lock.
func lockPath(es *electionState) string {
	if es.lock == election.LockLeases {
		return fmt.Sprintf("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", es.namespace, es.name)
	}
	return fmt.Sprintf("/api/v1/namespaces/%s/%s/%s", es.namespace, es.lock, es.name)
}

// withScheme gives cfg what a RESTClient for raw requests needs.
func withScheme(cfg *rest.Config) *rest.Config {
	cfg.GroupVersion = &schema.GroupVersion{}
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return cfg
}

// schedule injects faults in rounds until end, and past it until every
// kind was injected min times, but never past hardEnd. A round deals a
// shuffled deck of the election kinds, each to an idle election that has
// a target for it (a leader to kill, a follower to stop), several
// elections at once; once they are all measured, it injects the global
// kinds, in shuffled order, one after the other. A card with no target
// anywhere goes back under the deck. So every round injects every kind
// once, and the global faults, which must not overlap any other fault's
// measure, wait for the elections once a round rather than once each.
func (h *harness) schedule(ctx context.Context, end, hardEnd time.Time, min int, rng *rand.Rand) {
	done := func() bool {
		now := time.Now()
		return ctx.Err() != nil || now.After(hardEnd) || (now.After(end) && len(h.short(min)) == 0)
	}
	for !done() {
		h.electionRound(ctx, shuffled(rng, electionKinds), rng, done)
		for _, kind := range shuffled(rng, globalKinds) {
			if done() {
				return
			}
			sleep(ctx, between(rng, 300*time.Millisecond, time.Second))
			h.globalFault(ctx, kind, newRand(rng))
		}
		h.mu.Lock()
		h.rounds++
		fmt.Fprintf(os.Stderr, "chaos: %s: round %d of the deck done\n", time.Now().Format("15:04:05"), h.rounds)
		h.mu.Unlock()
	}
}

// electionRound deals deck to the elections and returns when every card
// was injected and measured, or done.
func (h *harness) electionRound(ctx context.Context, deck []string, rng *rand.Rand, done func() bool) {
	type result struct {
		es   *electionState
		kind string
		ok   bool
	}
	results := make(chan result)
	busy := map[*electionState]bool{}
	next := time.Now()
	for len(deck) > 0 || len(busy) > 0 {
		var idle []*electionState
		for _, es := range h.elections {
			if !busy[es] {
				idle = append(idle, es)
			}
		}
		deal := len(deck) > 0 && len(idle) > 0 && !done()
		if !deal && len(busy) == 0 {
			return
		}
		var timer <-chan time.Time
		if deal {
			timer = time.After(time.Until(next))
		}
		select {
		case r := <-results:
			delete(busy, r.es)
			if !r.ok {
				// No target there now: the card goes back under the deck.
				deck = append(deck, r.kind)
				next = time.Now().Add(200 * time.Millisecond)
			}
		case <-timer:
			kind, es, frng := deck[0], idle[rng.IntN(len(idle))], newRand(rng)
			deck = deck[1:]
			busy[es] = true
			go func() { results <- result{es, kind, h.electionFault(ctx, kind, es, frng)} }()
			next = time.Now().Add(between(rng, 200*time.Millisecond, time.Second))
		}
	}
}

// shuffled is a copy of kinds in an order drawn from rng.
func shuffled(rng *rand.Rand, kinds []string) []string {
	out := slices.Clone(kinds)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// newRand is a generator of its own for one fault, drawn from rng, so
// that how long one fault waits does not change the draws of the next.
func newRand(rng *rand.Rand) *rand.Rand {
	return rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
}
