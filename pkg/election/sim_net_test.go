package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// simNetParams are the faults of one participant's connection to the API
// server. Every message (a request, a response, a watch event) draws its own
// delay; the probabilities are per message.
type simNetParams struct {
	// Latency is the usual one-way delay; each message takes between half
	// and twice as long.
	Latency simDuration `json:"latency"`
	// Spike is the chance that a message is held up to SpikeMax instead:
	// long enough, at times, for the request to time out.
	Spike    float64     `json:"spike,omitempty"`
	SpikeMax simDuration `json:"spikeMax,omitempty"`
	// Drop is the chance that a request never reaches the server; Lost that
	// its response never comes back although the server applied it.
	Drop float64 `json:"drop,omitempty"`
	Lost float64 `json:"lost,omitempty"`
	// WatchClose is the mean time after which the server ends a watch early
	// (an API server restart, a load balancer's idle timeout); 0: only at
	// the timeoutSeconds the client asked for.
	WatchClose simDuration `json:"watchClose,omitempty"`
	// WatchError is the chance that a watch ends with an ERROR event (410
	// Gone or 504 too large resource version) at a random point, or that
	// the watch request is answered with one.
	WatchError float64 `json:"watchError,omitempty"`
	// Bookmarks is how often the server sends a bookmark; 0: never.
	Bookmarks simDuration `json:"bookmarks,omitempty"`
	// ForbidWatch answers every watch 403 Forbidden, as for a Role without
	// the watch verb: the participant must poll.
	ForbidWatch bool `json:"forbidWatch,omitempty"`
}

// simNet is one participant's connection to the API server: an
// http.RoundTripper that hands requests to the in-memory server after a
// delay, with the participant's faults. It also freezes the participant's
// I/O while the process is paused: no request leaves, no answer or watch
// event is taken in, until it resumes.
type simNet struct {
	w      *simWorld
	proc   int
	params simNetParams

	mu      sync.Mutex
	paused  bool
	resumed chan struct{} // closed when a pause ends
	cut     bool
	cutMode string        // "drop" or "hold"
	healed  chan struct{} // closed when a partition ends
	dead    bool
	died    chan struct{} // closed when the process crashes
	streams []simStream
}

type simStream struct {
	name string
	r    *rand.Rand
}

var (
	errSimReset   = fmt.Errorf("read tcp 10.0.0.2:41234->10.96.0.1:443: %w", syscall.ECONNRESET)
	errSimRefused = fmt.Errorf("dial tcp 10.96.0.1:443: %w", syscall.ECONNREFUSED)
	errSimOver    = errors.New("the simulation is over")
)

func newSimNet(w *simWorld, proc int, params simNetParams) *simNet {
	return &simNet{
		w: w, proc: proc, params: params,
		resumed: make(chan struct{}),
		healed:  make(chan struct{}),
		died:    make(chan struct{}),
	}
}

// rand returns the random stream for one kind of message. Each kind of
// request is made by one goroutine of the elector, so the n-th request of a
// kind draws the same numbers in every run of a seed, whatever the
// interleaving of the elector's goroutines.
func (n *simNet) rand(name string) *rand.Rand {
	for _, s := range n.streams {
		if s.name == name {
			return s.r
		}
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", n.proc, name)
	s := simStream{name, rand.New(rand.NewPCG(n.w.plan.Seed, h.Sum64()))}
	n.streams = append(n.streams, s)
	return s.r
}

// delay draws one message's transit time.
func (n *simNet) delay(r *rand.Rand) time.Duration {
	d, _ := n.transit(r)
	return d
}

// transit draws one message's transit time, and whether it was held up.
func (n *simNet) transit(r *rand.Rand) (time.Duration, bool) {
	p := n.params
	if p.Spike > 0 && r.Float64() < p.Spike {
		return time.Duration(r.Int64N(int64(p.SpikeMax.D()) + 1)), true
	}
	lat := p.Latency.D()
	return lat/2 + time.Duration(r.Int64N(int64(3*lat/2)+1)), false
}

// fate is what happens to one request.
type simFate struct {
	up, down   time.Duration
	drop       bool // the request is lost on the way
	lost       bool // the response is lost on the way back
	resetIn    time.Duration
	lateApply  bool // a request held by a partition is applied even if the client gave up
	watchEnd   time.Duration
	watchErr   time.Duration // 0: none
	errKind    int
	wake       time.Duration // how long an answer held by a pause takes to be read once it ends
	upSpiked   bool          // the request is held up
	downSpiked bool          // its answer is held up
	lock       bool          // the request is about the lock
	noticeAt   time.Time     // when the client gives up on an answer that does not come
}

func (n *simNet) fate(stream string, watch bool) (simFate, *rand.Rand) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.rand(stream)
	// The delay after a pause comes from a stream of its own, so that a
	// stream draws for every message what it drew before pauses had one.
	f := simFate{wake: n.delay(n.rand(stream + "/wake"))}
	f.up, f.upSpiked = n.transit(r)
	f.down, f.downSpiked = n.transit(r)
	f.drop = r.Float64() < n.params.Drop
	f.lost = r.Float64() < n.params.Lost
	// A lost message is noticed when the connection breaks: the client's
	// HTTP/2 health check gives up after 30 to 45s, a reset comes sooner.
	f.resetIn = time.Duration(500+r.IntN(44500)) * time.Millisecond
	f.lateApply = r.IntN(2) == 0
	if watch {
		if m := n.params.WatchClose.D(); m > 0 {
			f.watchEnd = time.Duration(r.ExpFloat64() * float64(m))
		}
		if r.Float64() < n.params.WatchError {
			f.watchErr = time.Duration(r.Int64N(int64(20 * time.Second)))
			f.errKind = r.IntN(4)
		}
	}
	return f, r
}

// RoundTrip sends req to the server the way the network would.
func (n *simNet) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	// A paused process sends nothing. A request whose context ended
	// while it was paused is not sent when it resumes: its caller has
	// moved on, and would otherwise send its next request on the same
	// instant from another goroutine, in an order the Go scheduler picks.
	if _, err := n.awake(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	dead := n.dead
	n.mu.Unlock()
	if dead {
		return nil, errSimRefused
	}

	watch := req.URL.Query().Get("watch") == "true"
	if n.w.trace.all && !n.isDead() {
		rv := req.URL.Query().Get("resourceVersion")
		if body != nil {
			rv = simBrief(body)
		}
		n.w.tracef("p%d -> %s %s %s", n.proc, req.Method, simResource(req.URL.Path), rv)
	}
	stream := req.Method + " " + simResource(req.URL.Path)
	switch {
	case watch:
		stream = "WATCH"
	case simResource(req.URL.Path) == "events":
		// Every Event is posted by a goroutine of its own, and two may
		// be posted on one instant: each message draws from its own
		// stream, whichever goroutine comes first.
		h := fnv.New64a()
		h.Write(body)
		stream = fmt.Sprintf("%s %x", stream, h.Sum64())
	}
	f, r := n.fate(stream, watch)
	if simFateHook != nil {
		simFateHook(n.proc, req.Method, watch, simLockResource(req.URL.Path), &f)
	}
	f.lock = simLockResource(req.URL.Path)
	f.noticeAt = time.Now().Add(f.resetIn)
	if d, ok := ctx.Deadline(); ok && d.Before(f.noticeAt) {
		f.noticeAt = d
	}
	if f.lock && (f.drop || f.upSpiked || f.downSpiked || watch && f.lost) {
		// The participant waits for an answer that comes late or never:
		// it is excused from now on (see simNet.judge for what follows).
		n.unanswered(f, req.Method)
	}

	done := make(chan simReply, 1)
	var applied atomic.Int64 // when the server applied it, in Unix nanoseconds; 0: not (yet)
	go n.carry(ctx, req, body, f, done, &applied)

	var (
		reply simReply
		err   error
	)
	reset := time.NewTimer(f.resetIn)
	select {
	case reply = <-done:
		reset.Stop()
	case <-ctx.Done():
		reset.Stop()
		err = ctx.Err()
	case <-reset.C:
		err = errSimReset
	case <-n.w.done:
		reset.Stop()
		err = errSimOver
	}
	// A paused process takes in no answer until it resumes; then each
	// answer it was sent is taken in after its own delay, so that the
	// goroutines waiting for them do not all wake on one instant.
	if waited, werr := n.awake(); werr != nil && err == nil {
		err = werr
	} else if waited && !n.w.sleep(f.wake) && err == nil {
		err = errSimOver
	}
	if simLockResource(req.URL.Path) {
		n.judge(req.Method, watch, f, applied.Load(), err)
	}
	if err != nil {
		return nil, err
	}
	resp := &http.Response{
		StatusCode: reply.code,
		Status:     fmt.Sprintf("%d %s", reply.code, http.StatusText(reply.code)),
		Header:     http.Header{"Content-Type": []string{"application/json"}},
		Proto:      "HTTP/2.0", ProtoMajor: 2,
		Request: req,
	}
	if n.w.trace.all && !n.isDead() {
		n.w.tracef("p%d <- %s %s: %d %s", n.proc, req.Method, simResource(req.URL.Path), reply.code, simBrief(reply.body))
	}
	if reply.watch != nil {
		resp.Body = n.watchBody(ctx, reply.watch, f, r)
	} else {
		resp.Body = io.NopCloser(bytes.NewReader(reply.body))
		resp.ContentLength = int64(len(reply.body))
	}
	n.w.poke()
	return resp, nil
}

// unanswered tells the liveness check that a request of the lock will not
// be answered in time: the participant is excused until it notices.
func (n *simNet) unanswered(f simFate, method string) {
	n.w.live.hard(n.proc, f.noticeAt, fmt.Sprintf("its %s was lost or held up, which it notices by %s", method, simClock(simDay(f.noticeAt))))
}

// judge tells the liveness check what went wrong with one request of the
// lock, if anything: a lost answer to a request that was applied (at
// applied, in Unix nanoseconds), or any other fault.
func (n *simNet) judge(method string, watch bool, f simFate, applied int64, err error) {
	live, now := n.w.live, time.Now()
	switch {
	case err != nil && watch:
		live.hard(n.proc, now, fmt.Sprintf("its watch request failed at %s: %v", simClock(simDay(now)), err))
	case err != nil && f.lost && !f.upSpiked && applied != 0:
		// Excused when the answer was lost (see carry).
	case err != nil:
		live.hard(n.proc, now, fmt.Sprintf("its %s failed at %s: %v", method, simClock(simDay(now)), err))
	case f.upSpiked || f.downSpiked:
		live.hard(n.proc, now, fmt.Sprintf("its %s was held up until %s", method, simClock(simDay(now))))
	}
}

// carry takes one request to the server and its answer back. It goes on
// after the client has given up: a request on the wire may still be
// applied. It sets applied when the server applies a request of the lock.
func (n *simNet) carry(ctx context.Context, req *http.Request, body []byte, f simFate, done chan<- simReply, applied *atomic.Int64) {
	if !n.w.sleep(f.up) || f.drop {
		return
	}
	switch n.crossing() {
	case simLost:
		if f.lock {
			n.unanswered(f, req.Method)
		}
		return
	case simHeld:
		if !n.waitHealed() {
			return
		}
		if ctx.Err() != nil && !f.lateApply {
			// The client gave up and closed the stream before the
			// request was read.
			return
		}
		if !n.w.sleep(f.up) {
			return
		}
	}
	if n.params.ForbidWatch && req.URL.Query().Get("watch") == "true" {
		res := simResource(req.URL.Path)
		gr := schema.GroupResource{Resource: res}
		if res == "leases" {
			gr.Group = "coordination.k8s.io"
		}
		done <- simStatus(apierrors.NewForbidden(gr, "",
			fmt.Errorf(`User "system:serviceaccount:default:p%d" cannot watch resource %q in API group %q in the namespace "default"`, n.proc, res, gr.Group)))
		return
	}
	if f.watchErr > 0 && f.errKind == 3 && req.Method == http.MethodGet {
		// A lagging API server answers the watch itself with an error.
		if rv := req.URL.Query().Get("resourceVersion"); rv != "" && rv != "0" {
			n.w.server.mu.Lock()
			cur := n.w.server.rv
			n.w.server.mu.Unlock()
			done <- simStatus(simTooLarge(cur+1, cur))
			return
		}
	}
	reply := n.w.server.serve(req.Method, req.URL, body)
	if simLockResource(req.URL.Path) && reply.watch == nil {
		now := time.Now()
		applied.Store(now.UnixNano())
		if req.Method != http.MethodGet && reply.code < 300 {
			n.w.live.wrote(n.proc, req.Method, simVersionOf(reply.body), now)
		}
		if f.lost {
			n.w.live.lostAnswer(n.proc, req.Method, now)
		}
	}
	n.w.poke()
	if reply.watch != nil && ctx.Err() != nil {
		n.w.server.forget(reply.watch)
		return
	}
	if !n.w.sleep(f.down) || f.lost {
		if reply.watch != nil {
			n.w.server.forget(reply.watch)
		}
		return
	}
	switch n.crossing() {
	case simLost:
		if reply.watch != nil {
			n.w.server.forget(reply.watch)
		}
		if f.lock {
			n.unanswered(f, req.Method)
		}
		return
	case simHeld:
		// Held answers cross once the partition ends, each after its
		// own delay.
		if !n.waitHealed() || !n.w.sleep(f.down) {
			return
		}
	}
	done <- reply
}

type simCrossing int

const (
	simThrough simCrossing = iota
	simLost
	simHeld
)

// crossing tells what a partition does to a message that crosses now.
func (n *simNet) crossing() simCrossing {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.dead:
		return simLost
	case !n.cut:
		return simThrough
	case n.cutMode == "hold":
		return simHeld
	}
	return simLost
}

// waitHealed waits for the partition to end; false if the simulation or
// the process ends first.
func (n *simNet) waitHealed() bool {
	n.mu.Lock()
	healed, died := n.healed, n.died
	n.mu.Unlock()
	select {
	case <-healed:
		return true
	case <-died:
	case <-n.w.done:
	}
	return false
}

// awake waits while the process is paused, and reports whether it did. A
// paused process does not see its context being cancelled either: it
// notices when it resumes.
func (n *simNet) awake() (waited bool, err error) {
	for {
		n.mu.Lock()
		paused, resumed, died := n.paused, n.resumed, n.died
		n.mu.Unlock()
		if !paused {
			return waited, nil
		}
		waited = true
		select {
		case <-resumed:
		case <-died:
			return waited, errSimRefused
		case <-n.w.done:
			return waited, errSimOver
		}
	}
}

func (n *simNet) pause() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.paused = true
}

func (n *simNet) resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.paused = false
	close(n.resumed)
	n.resumed = make(chan struct{})
}

func (n *simNet) partition(mode string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut, n.cutMode = true, mode
}

func (n *simNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = false
	close(n.healed)
	n.healed = make(chan struct{})
}

func (n *simNet) isDead() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dead
}

// kill ends the process's connections at once: a crashed process sends
// nothing more, although what it sent may still arrive.
func (n *simNet) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.dead {
		n.dead = true
		close(n.died)
	}
}

// simResource names the resource of an API path, for the random streams.
func simResource(p string) string {
	if res, _, _, ok := simParsePath(p); ok {
		return res
	}
	return p
}

// simWatch is one watch stream as the server produces it.
type simWatch struct {
	key       string
	kind      simKind
	end       time.Time
	bookmarks bool

	mu    sync.Mutex
	items []simWatchItem
	ready chan struct{}
}

type simWatchItem struct {
	at   time.Time
	data []byte
	end  bool
}

func newSimWatch(key string, end time.Time, kind simKind, bookmarks bool) *simWatch {
	return &simWatch{key: key, kind: kind, end: end, bookmarks: bookmarks, ready: make(chan struct{}, 1)}
}

func (w *simWatch) push(it simWatchItem) {
	it.at = time.Now()
	w.mu.Lock()
	w.items = append(w.items, it)
	w.mu.Unlock()
	poke(w.ready)
}

func (w *simWatch) pop() (simWatchItem, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.items) == 0 {
		return simWatchItem{}, false
	}
	it := w.items[0]
	w.items = w.items[1:]
	return it, true
}

// simWatchBody is the body of a watch response as the client reads it:
// events arrive in order, each after its own delay, and not while the
// process is paused or cut off.
type simWatchBody struct {
	n     *simNet
	ctx   context.Context
	w     *simWatch
	r     *rand.Rand
	last  time.Time // when the previous event arrived
	buf   []byte
	err   error
	errAt time.Time // when the server sends an injected ERROR event
	errEv []byte
	once  sync.Once
	close chan struct{}
}

func (n *simNet) watchBody(ctx context.Context, w *simWatch, f simFate, r *rand.Rand) io.ReadCloser {
	now := time.Now()
	if f.watchEnd > 0 && now.Add(f.watchEnd).Before(w.end) {
		w.end = now.Add(f.watchEnd)
	}
	b := &simWatchBody{n: n, ctx: ctx, w: w, r: r, last: now, close: make(chan struct{})}
	if f.watchErr > 0 && f.errKind < 3 {
		b.errAt = now.Add(f.watchErr)
		n.w.server.mu.Lock()
		rv := n.w.server.rv
		n.w.server.mu.Unlock()
		switch f.errKind {
		case 0, 1:
			b.errEv = simEncodeEvent("ERROR", simStatusJSON(simTooOld(rv-1, rv+1)))
		default:
			b.errEv = simEncodeEvent("ERROR", simStatusJSON(simTooLarge(rv+1, rv)))
		}
	}
	return b
}

func (b *simWatchBody) Read(p []byte) (int, error) {
	if len(b.buf) == 0 && b.err == nil {
		b.buf, b.err = b.next()
		if b.err != nil {
			b.n.w.server.forget(b.w)
			now := time.Now()
			b.n.w.live.hard(b.n.proc, now, fmt.Sprintf("its watch ended at %s: %v", simClock(simDay(now)), b.err))
		}
		b.n.w.poke()
	}
	if len(b.buf) > 0 {
		c := copy(p, b.buf)
		b.buf = b.buf[c:]
		return c, nil
	}
	return 0, b.err
}

// next waits for the next event the server sends and carries it to the
// client.
func (b *simWatchBody) next() ([]byte, error) {
	var bookmark <-chan time.Time
	if b.w.bookmarks && b.n.params.Bookmarks > 0 {
		t := time.NewTimer(b.n.params.Bookmarks.D())
		defer t.Stop()
		bookmark = t.C
	}
	end := time.NewTimer(time.Until(b.w.end))
	defer end.Stop()
	var injected <-chan time.Time
	if !b.errAt.IsZero() {
		t := time.NewTimer(time.Until(b.errAt))
		defer t.Stop()
		injected = t.C
	}
	var it simWatchItem
	for {
		var ok bool
		if it, ok = b.w.pop(); ok {
			break
		}
		// The end and the injected error may both be due already (the
		// process was paused past them): the earlier one wins, not the
		// select's random pick.
		now := time.Now()
		errDue := !b.errAt.IsZero() && !now.Before(b.errAt)
		if endDue := !now.Before(b.w.end); endDue && (!errDue || b.w.end.Before(b.errAt)) {
			it = simWatchItem{at: now, end: true}
			break
		} else if errDue {
			it = simWatchItem{at: now, data: b.errEv, end: true}
			break
		}
		select {
		case <-b.w.ready:
			continue
		case <-bookmark:
			it = simWatchItem{at: time.Now(), data: b.n.w.server.bookmark(b.w)}
		case <-end.C:
			it = simWatchItem{at: time.Now(), end: true}
		case <-injected:
			it = simWatchItem{at: time.Now(), data: b.errEv, end: true}
		case <-b.ctx.Done():
			return nil, b.ctx.Err()
		case <-b.close:
			return nil, errors.New("http2: response body closed")
		case <-b.n.died:
			return nil, errSimReset
		case <-b.n.w.done:
			return nil, io.EOF
		}
		break
	}
	if it.end && it.data == nil {
		return b.deliver(it, nil, io.EOF)
	}
	if it.end {
		b.w.end = time.Now() // nothing follows an ERROR event
	}
	return b.deliver(it, it.data, nil)
}

// deliver waits until the event has crossed the network.
func (b *simWatchBody) deliver(it simWatchItem, data []byte, err error) ([]byte, error) {
	// A stream delivers in order, and one event at a time: the client
	// reads one, hands it on, and then reads the next, so no two of its
	// events reach the elector on one instant.
	const readNext = time.Microsecond
	d, spiked := b.transit()
	at := it.at.Add(d)
	if earliest := b.last.Add(readNext); at.Before(earliest) {
		at = earliest
	}
	b.last = at
	if spiked {
		// Excused from now: the participant learns nothing new until then.
		b.n.w.live.lateEvent(b.n.proc, simVersionOf(data), at)
	}
	t := time.NewTimer(time.Until(at))
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
		return nil, b.ctx.Err()
	case <-b.close:
		return nil, errors.New("http2: response body closed")
	case <-b.n.died:
		return nil, errSimReset
	case <-b.n.w.done:
		return nil, io.EOF
	}
	switch b.n.crossing() {
	case simLost:
		// The connection does not survive: the client notices when the
		// partition ends.
		b.n.waitHealed()
		return nil, errSimReset
	case simHeld:
		if !b.n.waitHealed() || !b.n.w.sleep(b.delay()) {
			return nil, errSimReset
		}
	}
	if waited, werr := b.n.awake(); werr != nil {
		return nil, werr
	} else if waited && !b.n.w.sleep(b.delay()) {
		return nil, io.EOF
	}
	b.last = time.Now()
	if err != nil {
		return nil, err
	}
	if b.n.w.trace.all && !b.n.isDead() {
		b.n.w.tracef("p%d <- watch %s", b.n.proc, simBrief(data))
	}
	return data, nil
}

// delay draws the transit time of one event of this stream.
func (b *simWatchBody) delay() time.Duration {
	d, _ := b.transit()
	return d
}

// transit draws the transit time of one event of this stream, and whether
// it was held up.
func (b *simWatchBody) transit() (time.Duration, bool) {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	return b.n.transit(b.r)
}

func (b *simWatchBody) Close() error {
	b.once.Do(func() { close(b.close) })
	return nil
}

// simVersionOf is the resourceVersion of an object, or of the object of a
// watch event.
func simVersionOf(b []byte) string {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Object *struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		} `json:"object"`
	}
	if json.Unmarshal(b, &o) != nil {
		return ""
	}
	if o.Object != nil {
		return o.Object.Metadata.ResourceVersion
	}
	return o.Metadata.ResourceVersion
}

// simBrief is the gist of an answer or a watch event, for traces: its type
// and resourceVersion.
func simBrief(b []byte) string {
	var o struct {
		Type     string `json:"type"`
		Reason   string `json:"reason"`
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Object struct {
			Reason   string `json:"reason"`
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		} `json:"object"`
	}
	if json.Unmarshal(b, &o) != nil {
		return ""
	}
	if o.Type != "" {
		return strings.TrimSpace(o.Type + " " + o.Object.Reason + " rv=" + o.Object.Metadata.ResourceVersion)
	}
	return strings.TrimSpace(o.Reason + " rv=" + o.Metadata.ResourceVersion)
}
