package elector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// notifyBound is how soon after GET / shows a change the application must
// have it: the README's promise on loopback. It is checked against the
// earliest instant the change can have happened, with no slack: a delivery
// fails it only when it was certainly late.
const notifyBound = 100 * time.Millisecond

// stableFor is how long /watch must show a state for the application to be
// owed it. A state that lasted less (a follower's "nobody leads" between a
// release and the next leader's write, a few milliseconds) may be replaced
// before it is sent: latest wins. It is well above the scheduling delays
// of a loaded machine, which could make /watch and the notifier see a
// transient state differently, and well below any state the test causes.
const stableFor = 250 * time.Millisecond

// state is what a status document says, without its time.
type state struct {
	leader bool
	name   string
	epoch  uint64
}

func stateOf(st election.Status) state { return state{st.IsLeader, st.Leader, st.Epoch} }

func (s state) String() string {
	return fmt.Sprintf("{is_leader:%v leader:%q epoch:%d}", s.leader, s.name, s.epoch)
}

// seen is a state and when the test got it.
type seen struct {
	at time.Time
	s  state
}

// delivery is one POST to a notifyReceiver.
type delivery struct {
	seen
	contentType string
	body        string
	keys        []string
	code        int
	node        string
}

// notifyReceiver is an application's -notify-url. It records every POST
// with when it arrived, and answers code(n) to the nth (from 0), or hangs
// until the elector gives up when code is nil and hang is set.
type notifyReceiver struct {
	srv  *httptest.Server
	code func(n int) int
	hang bool

	mu    sync.Mutex
	posts []delivery
}

func newNotifyReceiver(t *testing.T, code func(n int) int, hang bool) *notifyReceiver {
	r := &notifyReceiver{code: code, hang: hang}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(req.Body)
		d := delivery{seen: seen{at: at}, contentType: req.Header.Get("Content-Type"), body: string(body), code: http.StatusOK}
		if req.Method != http.MethodPost {
			d.code = http.StatusMethodNotAllowed
		}
		var st election.Status
		var fields map[string]json.RawMessage
		if json.Unmarshal(body, &st) == nil && json.Unmarshal(body, &fields) == nil {
			d.s, d.node = stateOf(st), st.Node
			for k := range fields {
				d.keys = append(d.keys, k)
			}
			slices.Sort(d.keys)
		}
		r.mu.Lock()
		if r.code != nil {
			d.code = r.code(len(r.posts))
		}
		r.posts = append(r.posts, d)
		r.mu.Unlock()
		if r.hang {
			<-req.Context().Done()
			return
		}
		w.WriteHeader(d.code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *notifyReceiver) arg() string { return "-notify-url=" + r.srv.URL + "/elector" }

func (r *notifyReceiver) all() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.posts)
}

// delivered are the POSTs answered 2xx.
func (r *notifyReceiver) delivered() []delivery {
	var out []delivery
	for _, d := range r.all() {
		if d.code/100 == 2 {
			out = append(out, d)
		}
	}
	return out
}

// watchLog records a participant's /watch stream with when each event
// arrived, until the stream ends.
type watchLog struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	events []seen
	ended  time.Time
	done   chan struct{}
}

func recordWatch(t *testing.T, p *participant) *watchLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := controlplane.WatchElector(ctx, nil, p.addr)
	if err != nil {
		cancel()
		t.Fatalf("GET /watch on %s: %v", p.id, err)
	}
	l := &watchLog{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		defer w.Close()
		for {
			st, err := w.Next()
			if err != nil {
				break
			}
			l.mu.Lock()
			l.events = append(l.events, seen{at: time.Now(), s: stateOf(st)})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.ended = time.Now()
		l.mu.Unlock()
	}()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	return l
}

// close ends the stream, if the process has not, and returns its events
// and when it ended.
func (l *watchLog) close(t *testing.T, p *participant) ([]seen, time.Time) {
	t.Helper()
	if !p.Exited() {
		l.cancel()
	}
	select {
	case <-l.done:
	case <-time.After(settle):
		t.Fatalf("/watch on %s did not end after the process did", p.id)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	end := l.ended
	if end.IsZero() {
		end = time.Now()
	}
	return slices.Clone(l.events), end
}

// TestNotifyTransitions runs three participants, each telling its own
// receiver, through an election and two graceful handovers, and stops the
// last leader too. For each participant it checks that every document is a
// POST of GET /'s body, that no state is delivered twice in a row, that
// every state /watch showed for stableFor was delivered, once, in /watch's
// order, and nothing /watch did not show unless it was replaced at once;
// that a leader that stops tells its application is_leader: false last;
// and that each delivery came within notifyBound of the change, judged
// from the watcher's GET / answers.
func TestNotifyTransitions(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	ids := []string{"a", "b", "c"}
	receivers := map[string]*notifyReceiver{}
	watches := map[string]*watchLog{}
	var ps []*participant
	for _, id := range ids {
		r := newNotifyReceiver(t, nil, false)
		receivers[id] = r
		p := w.start(id, adminKubeconfig, electionArgs(ns, std, r.arg())...)
		watches[id] = recordWatch(t, p)
		ps = append(ps, p)
	}

	stopped := map[string]time.Time{}
	running := slices.Clone(ps)
	for len(running) > 0 {
		leader := w.waitLeader(settle, running...)
		// Every follower's state settles too: it names the leader.
		time.Sleep(2 * stableFor)
		sent, err := leader.stop(t, syscall.SIGTERM)
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM, want status 0", leader.id, err)
		}
		stopped[leader.id] = sent
		running = slices.DeleteFunc(running, func(p *participant) bool { return p == leader })
	}

	var latencies, upper, sinceWatch []time.Duration
	for _, p := range ps {
		events, ended := watches[p.id].close(t, p)
		posts := receivers[p.id].all()
		checkDeliveries(t, p, posts, events, ended)
		if len(posts) == 0 {
			continue
		}
		last := posts[len(posts)-1]
		if last.s.leader {
			t.Errorf("%s: the last document delivered says is_leader: true; want the final false", p.id)
		}
		t.Logf("%s: %d documents delivered, %d /watch events; final is_leader:false %s after SIGTERM",
			p.id, len(posts), len(events), last.at.Sub(stopped[p.id]).Round(100*time.Microsecond))
		lo, hi, dw := deliveryLatencies(t, p, posts, events, w.samplesOf(p))
		latencies, upper, sinceWatch = append(latencies, lo...), append(upper, hi...), append(sinceWatch, dw...)
	}
	t.Logf("delivery after GET / showed the change (at most the latency): %s", quantiles(latencies))
	t.Logf("delivery after the last GET / that did not show it (at least the latency): %s", quantiles(upper))
	t.Logf("delivery after the /watch event of the same change: %s", quantiles(sinceWatch))
}

// checkDeliveries compares what p's receiver got with p's /watch stream.
func checkDeliveries(t *testing.T, p *participant, posts []delivery, events []seen, ended time.Time) {
	t.Helper()
	wantKeys := []string{"epoch", "is_leader", "leader", "node", "timestamp"}
	for i, d := range posts {
		if d.code != http.StatusOK || d.contentType != "application/json" || d.node != p.id || !slices.Equal(d.keys, wantKeys) || !strings.HasSuffix(d.body, "}\n") {
			t.Errorf("%s: POST %d: code %d, Content-Type %q, body %q; want a POST of GET /'s document", p.id, i, d.code, d.contentType, d.body)
		}
		if i > 0 && posts[i-1].s == d.s {
			t.Errorf("%s: %s delivered twice in a row", p.id, d.s)
		}
	}
	if len(events) == 0 {
		t.Errorf("%s: /watch showed nothing", p.id)
		return
	}
	stable := func(i int) bool {
		next := ended
		if i+1 < len(events) {
			next = events[i+1].at
		}
		return next.Sub(events[i].at) >= stableFor
	}
	// Walk the deliveries, matching each to the next /watch event of the
	// same state: matches must run forward, and skip no stable state. Both
	// follow the same change within milliseconds; a state that comes back
	// later (a leader's "not yet leading" before its term and "no longer"
	// after it read the same) is another change, told again.
	same := func(d delivery) func(seen) bool {
		return func(e seen) bool { return e.s == d.s && d.at.Sub(e.at).Abs() < stableFor }
	}
	wi := 0
	for i, d := range posts {
		k := slices.IndexFunc(events[wi:], same(d))
		if k >= 0 {
			for m := wi; m < wi+k; m++ {
				if stable(m) {
					t.Errorf("%s: /watch showed %s for %s or more at %s, and it was not delivered in its place", p.id, events[m].s, stableFor, events[m].at.Format(time.StampMicro))
				}
			}
			wi += k + 1
			continue
		}
		switch {
		case slices.ContainsFunc(events[:wi], same(d)):
			t.Errorf("%s: %s delivered at %s, after the later states /watch showed", p.id, d.s, d.at.Format(time.StampMicro))
		case d.at.Before(events[0].at):
			// Before the stream began.
		case i+1 < len(posts) && posts[i+1].at.Sub(d.at) < stableFor:
			// Replaced at once: /watch may have skipped it.
		case !d.at.Before(ended.Add(-stableFor)):
			// As the process ended, after its stream.
		default:
			t.Errorf("%s: %s delivered at %s, a state /watch never showed", p.id, d.s, d.at.Format(time.StampMicro))
		}
	}
	for m := wi; m < len(events); m++ {
		if stable(m) {
			t.Errorf("%s: /watch showed %s for %s or more at %s; it was never delivered", p.id, events[m].s, stableFor, events[m].at.Format(time.StampMicro))
		}
	}
}

// deliveryLatencies judges each delivery against the watcher's GET /
// answers, and fails one that arrived more than notifyBound after an answer
// already showed its state. It returns, for the deliveries of states that
// GET / showed, the time from the first answer showing the state (at most
// the latency), from the last request that did not (at least the latency),
// and from the /watch event of the same state.
//
// A state may come back (a leader that made the lock and waits out a lease
// before it leads says what it says again once it stops), so a delivery is
// judged by the run of answers that show its state around it: the first
// one sent between the deliveries before and after it, and the answers
// before it that show the same state.
func deliveryLatencies(t *testing.T, p *participant, posts []delivery, events []seen, samples []sample) (lo, hi, sinceWatch []time.Duration) {
	t.Helper()
	stateAt := func(i int) state {
		s := samples[i]
		return state{s.leader, s.name, s.epoch}
	}
	for i, d := range posts {
		if i == 0 {
			// Its change is the start of the process.
			continue
		}
		until := time.Now()
		if i+1 < len(posts) {
			until = posts[i+1].at
		}
		first := slices.IndexFunc(samples, func(s sample) bool {
			return !s.sent.Before(posts[i-1].at) && s.sent.Before(until) && state{s.leader, s.name, s.epoch} == d.s
		})
		for first > 0 && stateAt(first-1) == d.s {
			first--
		}
		if first <= 0 {
			// GET / never showed it (replaced at once), or showed it first.
			continue
		}
		shown, before := samples[first], samples[first-1]
		if late := d.at.Sub(shown.to); late > notifyBound {
			t.Errorf("%s: %s delivered %s after GET / showed it (answer received at %s), want within %s",
				p.id, d.s, late.Round(time.Millisecond), shown.to.Format(time.StampMicro), notifyBound)
		}
		lo = append(lo, max(d.at.Sub(shown.to), 0))
		hi = append(hi, d.at.Sub(before.sent))
		// The /watch event of the same state nearest the delivery.
		var nearest time.Duration
		found := false
		for _, e := range events {
			if dd := d.at.Sub(e.at); e.s == d.s && (!found || dd.Abs() < nearest.Abs()) {
				nearest, found = dd, true
			}
		}
		if found {
			sinceWatch = append(sinceWatch, nearest)
		}
	}
	return lo, hi, sinceWatch
}

// quantiles describes ds: count, median, 90th percentile, max.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	q := func(f float64) time.Duration { return ds[int(f*float64(len(ds)-1))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("n=%d median %s p90 %s max %s", len(ds), r(q(.5)), r(q(.9)), r(ds[len(ds)-1]))
}

// TestNotifyRetries: a receiver that refuses the first three deliveries
// (503) is asked again after 100, 200 and 400 ms at least, counted in
// elector_notify_failures_total, and then has the latest state: the
// participant's term, as GET / reports it.
func TestNotifyRetries(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	const refusals = 3
	r := newNotifyReceiver(t, func(n int) int {
		if n < refusals {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}, false)
	a := w.start("a", adminKubeconfig, electionArgs(ns, std, r.arg())...)
	w.waitLeader(settle, a)
	st, err := controlplane.ElectorStatus(context.Background(), httpClient, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, settle, func() error {
		got := r.delivered()
		if len(got) == 0 || got[len(got)-1].s != stateOf(st) {
			return errNotYet(fmt.Sprintf("delivered %d documents, not yet %s", len(got), stateOf(st)))
		}
		return nil
	})

	all := r.all()
	var gaps []string
	for i, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		gap := all[i+1].at.Sub(all[i].at)
		gaps = append(gaps, gap.Round(time.Millisecond).String())
		// The retry is sent the backoff after the refusal was answered,
		// which is after the refused request arrived: no slack needed.
		if gap < want {
			t.Errorf("retry %d came %s after the refusal, want at least %s", i+1, gap, want)
		}
	}
	t.Logf("retries after 503: %s (backoff 100, 200, 400 ms)", strings.Join(gaps, ", "))
	if v := metricValue(t, a, "elector_notify_failures_total"); v != refusals {
		t.Errorf("elector_notify_failures_total = %v, want %d", v, refusals)
	}
	last := r.delivered()
	lastAt := float64(last[len(last)-1].at.UnixNano()) / 1e9
	if v := metricValue(t, a, "elector_notify_last_success_timestamp_seconds"); v < lastAt-1 || v > lastAt+1 {
		t.Errorf("elector_notify_last_success_timestamp_seconds = %v, want about %v, when the last delivery arrived", v, lastAt)
	}
	for i := 1; i < len(last); i++ {
		if last[i].s == last[i-1].s {
			t.Errorf("%s delivered twice in a row", last[i].s)
		}
	}
}

// TestNotifyHungReceiver: a receiver that never answers holds up neither
// the renewals (its leader leads on, renewing, for many renew deadlines),
// nor /watch, nor the shutdown, which still hands over; the elector gives
// up on each request after its timeout and counts it failed.
func TestNotifyHungReceiver(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	hung := newNotifyReceiver(t, nil, true)
	a := w.start("a", adminKubeconfig, electionArgs(ns, std, hung.arg())...)
	watch := recordWatch(t, a)
	w.waitLeader(settle, a)
	led, _ := w.firstTrue(a, a.started)

	// Long enough for several renew deadlines and request timeouts (2 s).
	const window = 4 * time.Second
	from := time.Now()
	renewals := metricValue(t, a, `elector_renew_duration_seconds_count{result="success"}`)
	time.Sleep(window)
	renewals = metricValue(t, a, `elector_renew_duration_seconds_count{result="success"}`) - renewals
	for _, s := range w.samplesOf(a) {
		if s.sent.After(led.to) && !s.leader {
			t.Errorf("a said is_leader: false at %s while its receiver hung", s.to.Format(time.StampMilli))
			break
		}
	}
	// A renewal lands in each new second (RecordPrecision): about one a
	// second, and one is needed every renew deadline (1.5 s) to lead on.
	if least := float64(window / std.renew); renewals < least {
		t.Errorf("%v renewals in %s, want at least %v (one per renew deadline)", renewals, window, least)
	}
	t.Logf("%v renewals in %s while the receiver hung", renewals, time.Since(from).Round(time.Millisecond))
	if n := len(hung.all()); n < 2 {
		t.Errorf("the hung receiver got %d requests, want the first and a retry after the timeout", n)
	}
	if v := metricValue(t, a, "elector_notify_failures_total"); v < 1 {
		t.Errorf("elector_notify_failures_total = %v, want at least 1 after a request timed out", v)
	}

	// /watch showed the term as soon as GET / did.
	events, _ := watch.close(t, a)
	k := slices.IndexFunc(events, func(e seen) bool { return e.s.leader })
	if k < 0 {
		t.Fatalf("/watch on a never showed it lead: %v", events)
	}
	if d := events[k].at.Sub(led.to); d > notifyBound {
		t.Errorf("/watch showed a lead %s after GET / did, want within %s", d.Round(time.Millisecond), notifyBound)
	}

	// The shutdown waits for the hung receiver 1 s at most, beside the
	// release, and hands over.
	rb := newNotifyReceiver(t, nil, false)
	b := w.start("b", adminKubeconfig, electionArgs(ns, std, rb.arg())...)
	w.waitLeader(settle, a, b)
	sent, err := a.stop(t, syscall.SIGTERM)
	exited := time.Since(sent)
	t.Logf("a exited %s after SIGTERM, with its receiver hung", exited.Round(time.Millisecond))
	// 1 s for the final delivery, which runs beside the release; the slack
	// is for a loaded machine, and a race-built elector sleeps another
	// second as it exits (GORACE's atexit_sleep_ms).
	if exited > time.Second+loadSlack {
		t.Errorf("a exited %s after SIGTERM, want within 1s (with slack %s)", exited, loadSlack)
	}
	if err != nil {
		t.Errorf("a exited with %v, want status 0", err)
	}
	w.waitLeader(settle, b)
	eventually(t, settle, func() error {
		got := rb.delivered()
		if len(got) == 0 || !got[len(got)-1].s.leader {
			return errNotYet("b's receiver was not told b leads")
		}
		return nil
	})
}
