package election

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// simWorld runs one plan inside a synctest bubble: the API server, the
// participants (real Electors, each behind its own simNet), and the
// controller that applies the plan and checks that no two participants
// call themselves leader.
//
// The controller asks every participant's Status whenever anything reaches
// a participant (an answer, a watch event) or a participant's Status may
// have changed (Elector.subscribe), once while that instant unfolds and once after
// it has settled (synctest.Wait), and at least every step (a hundredth of
// the TTL). Between those instants nothing reaches a participant, so a
// participant can only stop calling itself leader, as its renew deadline
// passes: the samples see every moment two could lead at once.
//
// A paused process is modelled by its connection: nothing it sends leaves
// and nothing sent to it is taken in until it resumes, and it is not asked
// for its Status meanwhile; its first answer after resuming counts. Its
// goroutines are not frozen, though: its own timers still fire during the
// pause, so it may act on them early (with what it knew when it was
// paused). Freezing them would need a clock the elector takes from outside.
type simWorld struct {
	t      *testing.T
	plan   *simPlan
	opts   simOptions
	server *simAPIServer
	live   *simLiveness
	rand   *rand.Rand // the controller's choices
	start  time.Time
	done   chan struct{}
	wake   chan struct{}
	procs  []*simProc
	trace  simTrace
	res    simResult

	leaders    []*simProc // in the last sample
	lastLeader *simProc
	hadLeader  bool
	lostAt     time.Time // when the last sample with a leader was followed by one without
	// epoch is the greatest epoch a leader has reported, and epochBy the
	// process that reported it.
	epoch   uint64
	epochBy *simProc
}

type simOptions struct {
	step    time.Duration // the longest gap between two samples; 0: a hundredth of the TTL
	verbose bool          // log the whole trace, with the elector's logs
	trace   bool          // keep the whole trace, with the elector's logs, in the result
}

// simResult is what one schedule showed.
type simResult struct {
	plan      *simPlan
	violation string        // empty when the invariant held
	first     time.Duration // from the start to the first leader; -1: none
	failovers []time.Duration
	leaderEnd bool // someone led at the end, or within its last 3 TTLs
	quietEnd  bool // no action of the plan for the last 3 TTLs, and a participant was up to lead
	virtual   time.Duration
	samples   int
	trace     string // with simOptions.trace
}

type simProcState int

const (
	simRunning simProcState = iota
	simPaused
	simStopping // cancelled, releasing; still answers until Run returns
	simGone     // crashed, or stopped and exited
)

// simProc is one process: an Elector and its connection.
type simProc struct {
	n      int
	id     string
	net    *simNet
	e      *Elector
	cancel context.CancelFunc
	exited chan struct{}
	state  simProcState
	leads  bool // in the last sample
}

func (p *simProc) String() string { return fmt.Sprintf("p%d(%s)", p.n, p.id) }

// simExecute runs plan in a new bubble.
func simExecute(t *testing.T, plan *simPlan, opts simOptions) simResult {
	var res simResult
	synctest.Test(t, func(t *testing.T) {
		w := &simWorld{
			t: t, plan: plan, opts: opts,
			server: newSimAPIServer(plan.History),
			live:   newSimLiveness(plan),
			rand:   rand.New(rand.NewPCG(plan.Seed, 0xc0ffee)),
			done:   make(chan struct{}),
			wake:   make(chan struct{}, 1),
			res:    simResult{plan: plan, first: -1},
		}
		w.trace.all = opts.verbose || opts.trace
		w.server.wrote = w.wrote
		res = w.run()
	})
	return res
}

// simQueued is an action due at a time; seq keeps simultaneous ones in the
// order they were queued.
type simQueued struct {
	at  time.Time
	seq int
	act simAction
	// proc is the process an action queued by the controller (a resume, a
	// heal, a restart) applies to.
	proc *simProc
}

func (w *simWorld) run() simResult {
	// Start where the plan says in a second of the clock.
	time.Sleep(w.plan.Offset.D())
	w.start = time.Now()
	end := w.start.Add(w.plan.Length.D())

	var queue []simQueued
	seq := 0
	push := func(q simQueued) {
		q.seq = seq
		seq++
		i, _ := slices.BinarySearchFunc(queue, q, func(a, b simQueued) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return a.seq - b.seq
		})
		queue = slices.Insert(queue, i, q)
	}
	for _, a := range w.plan.Events {
		push(simQueued{at: w.start.Add(a.At.D()), act: a})
	}
	quietSince := w.start
	step := w.opts.step
	if step <= 0 {
		step = w.plan.TTL.D() / 100
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		synctest.Wait()
		now := time.Now()
		w.sample()
		if w.res.violation != "" {
			break
		}
		select {
		case <-w.wake:
		default:
		}
		if !now.Before(end) {
			break
		}
		if len(queue) > 0 && !queue[0].at.After(now) {
			q := queue[0]
			queue = queue[1:]
			for _, next := range w.apply(q) {
				push(next)
			}
			quietSince = now
			continue
		}
		next := end
		if len(queue) > 0 && queue[0].at.Before(next) {
			next = queue[0].at
		}
		if s := now.Add(step); s.Before(next) {
			next = s
		}
		timer.Reset(next.Sub(now))
		select {
		case <-timer.C:
		case <-w.wake:
			// Look once while the instant is still unfolding, as well as
			// after it has settled.
			w.sample()
		}
	}

	w.res.virtual = time.Since(w.start)
	ttl := w.plan.TTL.D()
	// Without a leader at the end, and for the last three TTLs: a failover
	// the network's own faults (latency, lost messages) caused may still
	// be under way at the end, a longer gap is worth a look.
	leaderless := w.start
	if w.hadLeader {
		leaderless = w.lostAt
	}
	w.res.leaderEnd = len(w.leaders) > 0 || time.Since(leaderless) < 3*ttl
	if time.Since(quietSince) > 3*ttl {
		for _, p := range w.procs {
			if p.state == simRunning {
				w.res.quietEnd = true
			}
		}
	}
	// The story ends here: what the processes log as they are torn down
	// depends on which of their goroutines notices first.
	w.trace.close()
	w.shutdown()
	if w.res.violation != "" {
		w.res.violation += "\n" + w.trace.String()
	} else if w.opts.verbose {
		w.t.Log("trace:\n" + w.trace.String())
	}
	if w.opts.trace {
		w.res.trace = w.trace.String()
	}
	return w.res
}

// shutdown ends every process and the network, and waits for every Run to
// return.
func (w *simWorld) shutdown() {
	for _, p := range w.procs {
		p.cancel()
	}
	close(w.done)
	w.server.close()
	for _, p := range w.procs {
		select {
		case <-p.exited:
		case <-time.After(time.Hour):
			w.t.Errorf("seed %d: %s: Run did not return within an hour of its context ending", w.plan.Seed, p)
		}
	}
}

// poke wakes the controller: something was delivered.
func (w *simWorld) poke() { poke(w.wake) }

// sleep waits d; false if the simulation ended first.
func (w *simWorld) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-w.done:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.done:
		return false
	}
}

// checkEpoch checks the epoch that p reports as it begins to lead: every
// term's is greater than every earlier term's. p may report the greatest
// one again, when its own term goes on (it answered a hair past its renew
// deadline, then got the answer of a renewal sent before it).
func (w *simWorld) checkEpoch(p *simProc, epoch uint64, now time.Time) {
	if w.res.violation != "" {
		return
	}
	switch {
	case epoch == 0:
		w.res.violation = fmt.Sprintf("%s leads with no epoch, at %s", p, simClock(w.since(now)))
	case epoch < w.epoch || epoch == w.epoch && p != w.epochBy:
		w.res.violation = fmt.Sprintf("%s leads with epoch %d, not above %d of %s before it, at %s", p, epoch, w.epoch, w.epochBy, simClock(w.since(now)))
	default:
		w.epoch, w.epochBy = epoch, p
		return
	}
	w.tracef("VIOLATION: %s", w.res.violation)
}

// sample asks every process that can answer whether it leads, and checks
// that at most one does. A paused process cannot answer; it is asked first
// thing when it resumes. A crashed or exited one answers nothing.
func (w *simWorld) sample() {
	now := time.Now()
	w.res.samples++
	var leaders []*simProc
	for _, p := range w.procs {
		switch p.state {
		case simPaused, simGone:
			continue
		case simStopping:
			select {
			case <-p.exited:
				p.state = simGone
				if p.leads {
					p.leads = false
					w.tracef("%s exited", p)
				}
				continue
			default:
			}
		}
		s := p.e.Status()
		if s.IsLeader != p.leads {
			p.leads = s.IsLeader
			if s.IsLeader {
				w.tracef("%s leads, epoch %d", p, s.Epoch)
				w.checkEpoch(p, s.Epoch, now)
			} else {
				w.tracef("%s no longer leads", p)
			}
		}
		if s.IsLeader {
			leaders = append(leaders, p)
		}
	}
	w.leaders = leaders
	if len(leaders) > 1 && w.res.violation == "" {
		names := make([]string, len(leaders))
		for i, p := range leaders {
			names[i] = p.String()
		}
		w.res.violation = fmt.Sprintf("%s report is_leader at once, at %s (%s after the start)",
			strings.Join(names, " and "), simClock(w.since(now)), now.Sub(w.start))
		w.tracef("VIOLATION: %s lead at once", strings.Join(names, ", "))
	}
	if len(leaders) == 0 && w.res.violation == "" {
		w.checkLiveness(now)
	}
	switch {
	case len(leaders) > 0 && !w.hadLeader:
		w.res.first = now.Sub(w.start)
		w.hadLeader = true
	case len(leaders) > 0 && !w.lostAt.IsZero():
		w.res.failovers = append(w.res.failovers, now.Sub(w.lostAt))
		w.lostAt = time.Time{}
	case len(leaders) == 0 && w.hadLeader && w.lostAt.IsZero():
		w.lostAt = now
	}
	if len(leaders) > 0 {
		w.lastLeader = leaders[0]
	}
}

// checkLiveness fails the schedule if no one leads at now although a
// running participant has been free of faults for long enough to lead (see
// simLiveness).
func (w *simWorld) checkLiveness(now time.Time) {
	for _, p := range w.procs {
		if p.state != simRunning {
			continue
		}
		due, why := w.live.due(p.n)
		if !now.After(due) {
			continue
		}
		w.res.violation = fmt.Sprintf("no one leads at %s (%s after the start), although %s should have seen a leader by %s: "+
			"the last thing that could hold the election up was %s",
			simClock(w.since(now)), now.Sub(w.start), p, simClock(w.since(due)), why)
		w.tracef("VIOLATION: no leader, and %s runs free of faults", p)
		return
	}
}

// resolve finds the process an action is about.
func (w *simWorld) resolve(who int) *simProc {
	var alive []*simProc
	for _, p := range w.procs {
		if p.state == simRunning || p.state == simPaused {
			alive = append(alive, p)
		}
	}
	switch {
	case who >= 0 && who < len(w.procs):
		return w.procs[who]
	case who == simLeader && len(w.leaders) > 0:
		return w.leaders[0]
	case who == simLeader && w.lastLeader != nil && w.lastLeader.state != simGone:
		return w.lastLeader
	case len(alive) > 0:
		return alive[w.rand.IntN(len(alive))]
	}
	return nil
}

// apply does one action and returns the ones it schedules.
func (w *simWorld) apply(q simQueued) []simQueued {
	a := q.act
	now := time.Now()
	w.live.fault(now)
	resource := string(w.plan.Lock)
	switch a.Do {
	case "start":
		id := a.ID
		if id == "" && a.SameAs != nil {
			same := w.resolve(*a.SameAs)
			if same == nil {
				return nil
			}
			id = same.id
		}
		net := w.plan.Net
		if a.Net != nil {
			net = *a.Net
		}
		w.startProc(id, net)
		return nil
	case "delete":
		if w.server.remove(resource, "default", "sim") {
			w.tracef("lock deleted")
		}
		return nil
	case "garbage":
		w.garbage(resource, a.Mode)
		return nil
	}

	p := q.proc
	if p == nil {
		p = w.resolve(a.Who)
	}
	if p == nil {
		return nil
	}
	switch a.Do {
	case "pause":
		if p.state != simRunning {
			return nil
		}
		p.state = simPaused
		p.net.pause()
		w.tracef("%s paused for %s", p, a.For.D())
		return []simQueued{{at: now.Add(a.For.D()), act: simAction{Do: "resume"}, proc: p}}
	case "resume":
		if p.state != simPaused {
			return nil
		}
		// Its first answer after the pause counts, before anything it
		// does once awake.
		p.state = simRunning
		w.tracef("%s resumes", p)
		w.sample()
		p.net.resume()
		return nil
	case "partition":
		if p.state == simGone || p.net.isCut() {
			return nil
		}
		p.net.partition(a.Mode)
		w.tracef("%s cut off (%s) for %s", p, a.Mode, a.For.D())
		return []simQueued{{at: now.Add(a.For.D()), act: simAction{Do: "heal"}, proc: p}}
	case "heal":
		p.net.heal()
		w.tracef("%s reconnected", p)
		return nil
	case "crash":
		if p.state == simGone || p.state == simStopping {
			return nil
		}
		p.state = simGone
		p.leads = false
		p.net.kill()
		p.cancel()
		w.tracef("%s crashed", p)
	case "stop":
		if p.state != simRunning {
			return nil
		}
		p.state = simStopping
		p.cancel()
		w.tracef("%s stopping", p)
	default:
		w.t.Fatalf("plan of seed %d: unknown action %q", w.plan.Seed, a.Do)
	}
	if a.For > 0 {
		return []simQueued{{at: now.Add(a.For.D()), act: simAction{Do: "start", ID: p.id}}}
	}
	return nil
}

// garbage writes over the lock as something other than an elector would:
// "unreadable" is a record no elector can use (a broken annotation; a Lease
// holder without a lease duration or times), "foreign" a holder that is no
// participant, "released" a record without a holder that no participant
// wrote. A forged release lets a follower take over at once, while the
// leader learns of it only when the new version reaches it: the random
// schedules do not use it.
func (w *simWorld) garbage(resource, mode string) {
	ttl := int32(w.plan.TTL.D() / time.Second)
	w.server.overwrite(resource, "default", "sim", func(obj object) {
		if o, ok := obj.(*coordinationv1.Lease); ok {
			switch mode {
			case "unreadable":
				holder := "garbage:!"
				o.Spec = coordinationv1.LeaseSpec{HolderIdentity: &holder}
			case "released":
				holder, d := "", int32(1)
				o.Spec.HolderIdentity, o.Spec.LeaseDurationSeconds = &holder, &d
			default:
				holder := "intruder"
				now := metav1.NewMicroTime(time.Now())
				o.Spec = coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &ttl, AcquireTime: &now, RenewTime: &now}
			}
			return
		}
		a := obj.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		switch mode {
		case "unreadable":
			a[LeaderAnnotation] = `{"holderIdentity":`
		case "released":
			a[LeaderAnnotation] = `{"holderIdentity":"","leaseDurationSeconds":1,"acquireTime":null,"renewTime":null,"leaderTransitions":0}`
		default:
			now := time.Now().UTC().Format(time.RFC3339)
			a[LeaderAnnotation] = fmt.Sprintf(`{"holderIdentity":"intruder","leaseDurationSeconds":%d,"acquireTime":%q,"renewTime":%q,"leaderTransitions":0}`,
				ttl, now, now)
		}
		obj.SetAnnotations(a)
	})
	w.tracef("lock overwritten: %s", mode)
}

// simContent is how the simulated participants talk to the simulated API
// server, which speaks JSON only.
var simContent = rest.ContentConfig{ContentType: runtime.ContentTypeJSON}

// startProc starts a process: a new Elector with its own connection.
func (w *simWorld) startProc(id string, params simNetParams) {
	p := &simProc{n: len(w.procs), id: id, exited: make(chan struct{})}
	p.net = newSimNet(w, p.n, params)
	clients, err := NewClients(&rest.Config{Host: "http://sim.invalid", ContentConfig: simContent, Transport: p.net}, time.Second)
	if err != nil {
		w.t.Fatalf("seed %d: clients: %v", w.plan.Seed, err)
	}
	rd, rp := w.plan.timings()
	cfg := Config{
		Election: "sim", Namespace: "default", ID: id, LockType: w.plan.Lock,
		TTL: w.plan.TTL.D(), RenewDeadline: rd, RetryPeriod: rp,
		PreferNewest: !w.plan.Race && w.plan.Seed%4 != 0,
	}
	if !w.plan.Race && w.plan.Seed%3 == 1 {
		// A third of the other seeds wait for a leader that shuts down to come
		// back under its ID, as a StatefulSet's pod does: as long as a
		// lease, which the liveness bound after a write allows.
		cfg.ReturnWait = cfg.TTL
	}
	if w.plan.PodLabel {
		cfg.PodLabel, cfg.PodName = "sim.vapor.io/role", id
	}
	log := logr.Discard()
	if w.trace.all {
		log = funcr.New(func(prefix, args string) {
			// What a crashed process still logs, no one would read; and it
			// depends on which of its goroutines notices first.
			if !p.net.isDead() {
				w.tracef("%s %s: %s", p, prefix, args)
			}
		}, funcr.Options{Verbosity: 1})
	}
	e, err := New(cfg, clients, log, nil)
	if err != nil {
		w.t.Fatalf("seed %d: New: %v", w.plan.Seed, err)
	}
	// The participant's own jitter comes from the schedule too, so that a
	// seed replays exactly.
	e.seed(w.plan.Seed*1_000_003 + uint64(p.n))
	if w.plan.Tamper == "renew-deadline" {
		e.cfg.RenewDeadline = 3 * cfg.TTL
	}
	p.e = e
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	w.procs = append(w.procs, p)
	changes, unsubscribe := e.subscribe()
	go func() {
		defer close(p.exited)
		if err := e.Run(ctx); err != nil {
			w.t.Errorf("seed %d: %s: Run: %v", w.plan.Seed, p, err)
		}
	}()
	go func() {
		defer unsubscribe()
		for {
			select {
			case <-changes:
				w.poke()
			case <-p.exited:
				return
			}
		}
	}()
	w.tracef("%s started", p)
}

func (n *simNet) isCut() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut
}

// wrote traces a write of the lock.
func (w *simWorld) wrote(what string, rv int64, raw []byte) {
	w.trace.add(w.since(time.Now()), func() string { return fmt.Sprintf("server: %s rv=%d %s", what, rv, simDescribe(raw)) })
}

func (w *simWorld) tracef(format string, args ...any) {
	w.trace.add(w.since(time.Now()), func() string { return fmt.Sprintf(format, args...) })
}

// since is a time of the bubble's clock, which starts at midnight: as a
// duration since midnight, it shows where in a second everything happened.
func (w *simWorld) since(t time.Time) time.Duration {
	return t.Sub(t.Truncate(24 * time.Hour))
}

// simDescribe is the record in a stored lock object, for traces.
func simDescribe(raw []byte) string {
	var o struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec *coordinationv1.LeaseSpec `json:"spec"`
	}
	if json.Unmarshal(raw, &o) != nil {
		return string(raw)
	}
	if o.Spec != nil {
		s := o.Spec
		str := func(p *string) string {
			if p == nil {
				return "<nil>"
			}
			return *p
		}
		out := "holder=" + str(s.HolderIdentity)
		if s.RenewTime != nil {
			out += " renew=" + s.RenewTime.UTC().Format("15:04:05.000000")
		}
		if s.LeaseDurationSeconds != nil {
			out += fmt.Sprintf(" lease=%ds", *s.LeaseDurationSeconds)
		}
		return out
	}
	return o.Metadata.Annotations[LeaderAnnotation]
}

// simTrace keeps the last lines of a schedule's story (all of it when
// verbose), formatted only when shown.
type simTrace struct {
	mu     sync.Mutex
	all    bool
	closed bool
	lines  []simLine
}

type simLine struct {
	at   time.Duration
	text func() string
}

const simTraceKeep = 80

func (t *simTrace) add(at time.Duration, text func() string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if !t.all && len(t.lines) >= 2*simTraceKeep {
		t.lines = append(t.lines[:0], t.lines[simTraceKeep:]...)
	}
	t.lines = append(t.lines, simLine{at, text})
}

// close ends the trace: lines added later are dropped.
func (t *simTrace) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}

func (t *simTrace) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if !t.all && len(lines) > simTraceKeep {
		lines = lines[len(lines)-simTraceKeep:]
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s %s\n", simClock(l.at), l.text())
	}
	return b.String()
}

// simClock writes a time of day as 00:01:02.345678.
func simClock(d time.Duration) string {
	return time.Time{}.Add(d).Format("15:04:05.000000")
}
