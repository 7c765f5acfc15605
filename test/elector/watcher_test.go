package elector

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// sample is one answer of a participant to GET /: it describes some instant
// in [from, to].
type sample struct {
	sent, from, to time.Time
	leader         bool
	name           string
	epoch          uint64
}

// watcher runs the participants of one test and polls each of them, each on
// its own, every pollPeriod. When the test ends it fails it if any two ever
// led at once, if a new leader started less than the gap after the old one
// last said it led (unless the old one released the lock), if a participant
// that should run did not answer, or if one exited that the test did not
// stop.
type watcher struct {
	t    *testing.T
	gap  time.Duration
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu       sync.Mutex
	ps       []*participant
	samples  map[*participant][]sample
	failures []string
}

// newWatcher starts the watcher of a test whose participants promise gap
// between leaders. Start participants with its start, so that each is
// polled from before it can lead.
func newWatcher(t *testing.T, gap time.Duration) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{t: t, gap: gap, ctx: ctx, stop: cancel, samples: map[*participant][]sample{}}
	t.Cleanup(w.finish)
	return w
}

// start runs the elector with args (and -http on a free port), waits until
// it serves, and polls it from then on. Its HTTP server listens before it
// joins the election, so no leadership goes unseen.
func (w *watcher) start(id, kubeconfig string, args ...string) *participant {
	return w.startEnv(nil, id, kubeconfig, args...)
}

// startEnv is start with extra environment variables.
func (w *watcher) startEnv(env []string, id, kubeconfig string, args ...string) *participant {
	t := w.t
	t.Helper()
	args = append([]string{"-id=" + id, "-kubeconfig=" + kubeconfig, "-http=127.0.0.1:0", "-v=1"}, args...)
	cmd := exec.Command(electorBin, args...)
	// A data race ends a race-built elector at once, which the watcher
	// reports as an unexpected exit.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "GORACE=halt_on_error=1"}, env...)
	p := &participant{id: id, started: time.Now()}
	proc, addr, err := controlplane.StartElector(context.Background(), cmd, nil, func(line string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.logs.WriteString(line + "\n")
		if strings.Contains(line, `released the lock`) && !strings.Contains(line, `shutting down`) {
			p.releasedLock = append(p.releasedLock, time.Now())
		}
	}, 2*settle)
	if err != nil {
		t.Fatalf("elector %s: %v\nits whole log:\n%s", id, err, p.Logs())
	}
	p.Process, p.addr = proc, addr
	t.Cleanup(func() {
		p.mu.Lock()
		if p.ended.IsZero() {
			p.ended = time.Now()
		}
		p.mu.Unlock()
		p.Kill()
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("data race in elector %s:\n%s", id, p.Logs())
		} else if t.Failed() {
			t.Logf("logs of %s:\n%s", id, p.Logs())
		}
	})
	w.mu.Lock()
	w.ps = append(w.ps, p)
	w.mu.Unlock()
	w.wg.Add(1)
	go w.poll(p)
	return p
}

func (w *watcher) failf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failures = append(w.failures, fmt.Sprintf(format, args...))
}

// poll asks p GET / until p exits or the test ends. Every answer is a
// sample; an answer it cannot get while p should run is a failure.
func (w *watcher) poll(p *participant) {
	defer w.wg.Done()
	// One connection per participant, kept open, and no timeout: a stopped
	// process answers when it resumes, and that answer is the one that
	// matters most.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
	defer client.CloseIdleConnections()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-p.Done():
			if !p.mayEnd(time.Now()) {
				w.failf("%s exited while it should run: %v\n%s", p.id, p.Err(), p.Logs())
			}
			return
		default:
		}
		sent := time.Now()
		st, err := controlplane.ElectorStatus(w.ctx, client, p.addr)
		got := time.Now()
		if err != nil {
			if w.ctx.Err() != nil || p.mayEnd(got) {
				select {
				case <-p.Done():
				case <-w.ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
			w.failf("%s did not answer GET / sent at %s while it should run: %v", p.id, sent.Format(time.StampMilli), err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		w.record(p, sample{sent: sent, from: p.answeredFrom(sent, got), to: got, leader: st.IsLeader, name: st.Leader, epoch: st.Epoch})
		if d := pollPeriod - time.Since(sent); d > 0 {
			time.Sleep(d)
		}
	}
}

// term is one run of consecutive is_leader=true answers of a participant.
type term struct {
	p           *participant
	first, last sample
	// final: the participant's last term.
	final bool
	// next is when the participant's next term started; zero if final.
	next time.Time
}

// terms lists every participant's terms.
func (w *watcher) terms() []term {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []term
	for _, p := range w.ps {
		var cur *term
		ss := slices.Clone(w.samples[p])
		slices.SortStableFunc(ss, func(a, b sample) int { return a.sent.Compare(b.sent) })
		for _, s := range ss {
			switch {
			case s.leader && cur == nil:
				cur = &term{p: p, first: s, last: s}
			case s.leader:
				cur.last = s
			case cur != nil:
				out = append(out, *cur)
				cur = nil
			}
		}
		if cur != nil {
			out = append(out, *cur)
		}
		for i := len(out) - 1; i >= 0 && out[i].p == p; i-- {
			if i+1 < len(out) && out[i+1].p == p {
				out[i].next = out[i+1].first.from
			} else {
				out[i].final = true
			}
		}
	}
	return out
}

// violations checks every pair of terms of different participants: the
// later one must start at least the gap after the earlier one last said it
// led, or after it when the earlier one released the lock. Only the
// earlier participant's latest term before the later one counts: a leader
// that stepped down and took its own lock back is judged by its last
// true. The gap is the one the earlier participant promised. The instants
// are bounded from the samples, never guessed: the later leader's first
// true is at or before its answer arrived, the earlier one's last true at
// or after its request was sent (or the process resumed).
func (w *watcher) violations() []string {
	terms := w.terms()
	var out []string
	for _, a := range terms {
		for _, b := range terms {
			if a.p == b.p || b.first.from.Before(a.first.from) || !a.next.IsZero() && !b.first.from.Before(a.next) {
				continue
			}
			gap := w.gap
			if g, ok := a.p.promisedGap(); ok {
				gap = g
			}
			a.p.mu.Lock()
			released, releasedLock := a.p.released, slices.Clone(a.p.releasedLock)
			a.p.mu.Unlock()
			if !released.IsZero() && a.final && !b.first.to.Before(released) {
				gap = 0
			}
			// A release while it runs on: logged after the holder-less
			// record landed, so after a's last true and, by a moment
			// at most, after b's first.
			if slices.ContainsFunc(releasedLock, func(r time.Time) bool {
				return !r.Before(a.last.from) && r.Before(b.first.to.Add(time.Second))
			}) {
				gap = 0
			}
			if d := b.first.to.Sub(a.last.from); d < gap {
				kind := "too early"
				if d < 0 {
					kind = "at the same time"
				}
				out = append(out, fmt.Sprintf("%s led %s: its first is_leader=true came at most %s after %s's last (need %s): %s last true in [%s, %s], %s first true in [%s, %s]",
					b.p.id, kind, d.Round(time.Millisecond), a.p.id, gap,
					a.p.id, a.last.from.Format(time.StampMilli), a.last.to.Format(time.StampMilli),
					b.p.id, b.first.from.Format(time.StampMilli), b.first.to.Format(time.StampMilli)))
			}
		}
	}
	return out
}

// epochViolations checks the epochs the leaders reported: one, not 0,
// through each term, and above that of every term of another participant
// that ended before it began.
func (w *watcher) epochViolations() []string {
	terms := w.terms()
	var out []string
	for _, a := range terms {
		if a.first.epoch == 0 || a.last.epoch != a.first.epoch {
			out = append(out, fmt.Sprintf("%s led with epochs %d to %d in one term; want one epoch, not 0", a.p.id, a.first.epoch, a.last.epoch))
		}
		for _, b := range terms {
			if a.p != b.p && b.first.from.After(a.last.to) && b.first.epoch <= a.first.epoch {
				out = append(out, fmt.Sprintf("%s led with epoch %d after %s had led with epoch %d", b.p.id, b.first.epoch, a.p.id, a.first.epoch))
			}
		}
	}
	return out
}

// handovers describes each change of leader the watcher saw: the gap
// between the old leader's last true and the new one's first lies between
// the two bounds given.
func (w *watcher) handovers() []string {
	terms := w.terms()
	slices.SortFunc(terms, func(a, b term) int { return a.first.from.Compare(b.first.from) })
	var out []string
	for i := 1; i < len(terms); i++ {
		a, b := terms[i-1], terms[i]
		if a.p == b.p {
			continue
		}
		out = append(out, fmt.Sprintf("%s→%s %s..%s", a.p.id, b.p.id,
			b.first.from.Sub(a.last.to).Round(time.Millisecond), b.first.to.Sub(a.last.from).Round(time.Millisecond)))
	}
	return out
}

// finish stops polling and fails the test on what the watcher saw.
func (w *watcher) finish() {
	w.stop()
	w.wg.Wait()
	t := w.t
	w.mu.Lock()
	failures := append([]string(nil), w.failures...)
	var stats []string
	for _, p := range w.ps {
		ss := w.samples[p]
		if len(ss) == 0 {
			failures = append(failures, "the watcher got no answer from "+p.id)
			continue
		}
		var longest time.Duration
		for i := 1; i < len(ss); i++ {
			longest = max(longest, ss[i].sent.Sub(ss[i-1].sent))
		}
		stats = append(stats, fmt.Sprintf("%s: %d answers, longest between two requests %s", p.id, len(ss), longest.Round(time.Millisecond)))
	}
	w.mu.Unlock()
	t.Logf("watcher: %s", strings.Join(stats, "; "))
	if h := w.handovers(); len(h) > 0 {
		t.Logf("handovers (the gap between the old leader's last true and the new one's first): %s", strings.Join(h, "; "))
	}
	for _, f := range failures {
		t.Error(f)
	}
	if v := w.violations(); len(v) > 0 {
		t.Errorf("two leaders: %d violations of the promised gap, first: %s", len(v), v[0])
	}
	if v := w.epochViolations(); len(v) > 0 {
		t.Errorf("epochs: %d violations, first: %s", len(v), v[0])
	}
}

// failFast ends the test at once if a participant exited while it should
// run, or did not answer.
func (w *watcher) failFast() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.failures) > 0 {
		w.t.Fatalf("%s", w.failures[0])
	}
}

// freeze stops p (SIGSTOP) and sends it a request while it is stopped: the
// answer comes once it resumes, and describes it then, before its loop has
// caught up. It returns when p was seen stopped.
func (w *watcher) freeze(p *participant) time.Time {
	w.t.Helper()
	stopped := p.freeze(w.t)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		sent := time.Now()
		st, err := controlplane.ElectorStatus(w.ctx, client, p.addr)
		got := time.Now()
		if err != nil {
			if w.ctx.Err() == nil && !p.mayEnd(got) {
				w.failf("%s did not answer GET / sent while it was stopped: %v", p.id, err)
			}
			return
		}
		w.record(p, sample{sent: sent, from: p.answeredFrom(sent, got), to: got, leader: st.IsLeader, name: st.Leader, epoch: st.Epoch})
	}()
	return stopped
}

func (w *watcher) record(p *participant, s sample) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples[p] = append(w.samples[p], s)
}

// latest is p's newest sample sent at or after since.
func (w *watcher) latest(p *participant, since time.Time) (sample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ss := w.samples[p]
	if len(ss) == 0 || ss[len(ss)-1].sent.Before(since) {
		return sample{}, false
	}
	return ss[len(ss)-1], true
}

// firstTrue is p's first is_leader=true answer to a request sent at or
// after since.
func (w *watcher) firstTrue(p *participant, since time.Time) (sample, bool) {
	for _, s := range w.samplesOf(p) {
		if s.leader && !s.sent.Before(since) {
			return s, true
		}
	}
	return sample{}, false
}

// tookOver checks that one of ps said is_leader=true sooner than within
// after since, judged from the answers: a leader that lost the lock again
// at once under load still counts.
func (w *watcher) tookOver(since time.Time, within time.Duration, ps ...*participant) {
	w.t.Helper()
	var first sample
	var who *participant
	for _, p := range ps {
		if s, ok := w.firstTrue(p, since); ok && (who == nil || s.to.Before(first.to)) {
			first, who = s, p
		}
	}
	if who == nil {
		w.t.Errorf("nobody led after %s", since.Format(time.StampMilli))
		return
	}
	if d := first.to.Sub(since); d >= within {
		w.t.Errorf("%s led %s after %s, want sooner than %s", who.id, d.Round(time.Millisecond), since.Format(time.StampMilli), within)
	}
}

// nextTerm is p's first is_leader=true answer that follows an
// is_leader=false one, both to requests sent at or after since: the start
// of its next term, not the rest of the one it was in.
func (w *watcher) nextTerm(p *participant, since time.Time) (sample, bool) {
	out := false
	for _, s := range w.samplesOf(p) {
		if s.sent.Before(since) {
			continue
		}
		if !s.leader {
			out = true
		} else if out {
			return s, true
		}
	}
	return sample{}, false
}

// samplesOf is a copy of p's samples, in the order their requests were
// sent.
func (w *watcher) samplesOf(p *participant) []sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	ss := slices.Clone(w.samples[p])
	slices.SortStableFunc(ss, func(a, b sample) int { return a.sent.Compare(b.sent) })
	return ss
}

// waitLeader waits until exactly one of ps that runs (not ended, not frozen)
// leads and every one of them names it, judged by their answers to requests
// sent after the call, and returns it. It fails at once when a participant
// exited that should run.
func (w *watcher) waitLeader(timeout time.Duration, ps ...*participant) *participant {
	t := w.t
	t.Helper()
	since := time.Now()
	deadline := since.Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		w.failFast()
		var leader *participant
		n, fresh := 0, true
		names := map[string]bool{}
		for _, p := range ps {
			if p.Exited() || p.frozen() || p.mayEnd(time.Now()) {
				continue
			}
			s, ok := w.latest(p, since)
			if !ok {
				fresh = false
				break
			}
			names[s.name] = true
			if s.leader {
				leader = p
				n++
			}
		}
		if fresh && n == 1 && len(names) == 1 && names[leader.id] {
			return leader
		}
		last = fmt.Sprintf("%d leaders, leader names %v", n, names)
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no single agreed leader within %s: %s", timeout, last)
	return nil
}

// noLeaderFor checks, for d, that none of ps says it leads.
func (w *watcher) noLeaderFor(d time.Duration, ps ...*participant) {
	t := w.t
	t.Helper()
	since := time.Now()
	time.Sleep(d)
	for _, p := range ps {
		if s, ok := w.firstTrue(p, since); ok {
			t.Fatalf("%s led at %s, within %s of %s", p.id, s.to.Format(time.StampMilli), d, since.Format(time.StampMilli))
		}
	}
}
