package election

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Telling the application.
//
// Many applications cannot hold the /watch stream open. With
// Config.NotifyURL set, the elector POSTs the status document (GET /'s
// body, Content-Type application/json) to the URL when it starts, and then
// on every change of is_leader, leader or epoch: the changes /watch
// streams.
//
//   - Latest wins: at most one document waits to be delivered, and a newer
//     one replaces it; an older document is never sent after a newer one.
//     An application told nothing for a while is told where things stand,
//     not the history.
//   - A delivery that fails (no connection, no answer within notifyTimeout,
//     an answer other than 2xx) is retried with the newest document, after
//     a backoff that doubles from notifyBackoffMin to notifyBackoffMax.
//   - It never holds the election up: the election only wakes a subscriber
//     (see Elector.subscribe), which never blocks, and the deliveries run in a
//     goroutine of their own, one at a time.
//   - On shutdown, the elector tries for notifyFinalTimeout after its
//     context ends to deliver its last document, which says
//     is_leader: false.
//
// A request that timed out may still have reached the application, and the
// newest document is sent again: an application may be told a state twice,
// never an older one after a newer one (unless it answers after
// notifyTimeout, when a retry may overtake the request it is still
// handling).

const (
	// notifyTimeout bounds one delivery. An application answers a POST
	// from its own pod in milliseconds; two seconds is room for a GC pause
	// or a busy node, and is all a hung application delays the next
	// document by.
	notifyTimeout = 2 * time.Second
	// notifyBackoffMin is the wait before the first retry: soon enough that
	// an application that is still starting is told within a fraction of a
	// second of listening.
	notifyBackoffMin = 100 * time.Millisecond
	// notifyBackoffMax caps the doubling waits between retries: an
	// application that is down for long is asked every ten seconds, and is
	// told within ten seconds of coming back.
	notifyBackoffMax = 10 * time.Second
	// notifyFinalTimeout is how long after the elector's context ends it
	// keeps trying to deliver its last document. It runs beside the
	// release of the lock (releaseTimeout), so the process still exits
	// within a second of SIGTERM.
	notifyFinalTimeout = time.Second
)

// ValidateNotifyURL checks the URL the status document is POSTed to.
func ValidateNotifyURL(s string) error {
	return validateHTTPURL(s, "http://localhost:8080/elector")
}

// notifier delivers documents to the application, newest first and one at
// a time. offer never blocks; run sends.
type notifier struct {
	// send delivers one document; nil means the application has it.
	send func(ctx context.Context, doc []byte) error
	// result is told the outcome of every attempt, from run's goroutine.
	result func(err error)
	// ready holds a wake-up for run when a document is offered.
	ready chan struct{}

	mu sync.Mutex
	// pending is the newest document not yet delivered, nil when none.
	pending []byte
}

func newNotifier(send func(context.Context, []byte) error, result func(error)) *notifier {
	return &notifier{send: send, result: result, ready: make(chan struct{}, 1)}
}

// offer hands doc over for delivery, replacing any document that still
// waits. It never blocks.
func (n *notifier) offer(doc []byte) {
	n.mu.Lock()
	n.pending = doc
	n.mu.Unlock()
	poke(n.ready)
}

// take removes the pending document and returns it; nil when none waits.
func (n *notifier) take() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	doc := n.pending
	n.pending = nil
	return doc
}

// putBack keeps doc, whose delivery failed, for the next attempt, unless a
// newer document was offered meanwhile.
func (n *notifier) putBack(doc []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pending == nil {
		n.pending = doc
	}
}

// start delivers offered documents until the returned stop is called, and
// then what still waits, until notifyFinalTimeout after ctx ended (or
// after stop, if sooner) at the latest. stop returns once the deliveries
// have ended.
func (n *notifier) start(ctx context.Context) (stop func()) {
	// The deliveries outlive ctx, for the last document.
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	unwatch := context.AfterFunc(ctx, func() {
		// If it fires after stop, cancel is a no-op.
		time.AfterFunc(notifyFinalTimeout, cancel)
	})
	stopping := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.run(dctx, stopping, ctx.Done())
	}()
	return func() {
		final := time.AfterFunc(notifyFinalTimeout, cancel)
		defer final.Stop()
		close(stopping)
		<-done
		unwatch()
		cancel()
	}
}

// run sends the pending document, one at a time, and retries a failed one
// (or a newer one) after a backoff. When ending is closed (the elector is
// shutting down), a backoff is cut short: the last documents matter most.
// Once stopping is closed, it returns when nothing waits, or when the
// application refuses connections (it has exited, as an application does
// before its native sidecar); it returns at once when ctx ends.
func (n *notifier) run(ctx context.Context, stopping, ending <-chan struct{}) {
	stopped := false
	var backoff time.Duration
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		doc := n.take()
		if doc == nil {
			if stopped {
				return
			}
			select {
			case <-n.ready:
			case <-stopping:
				stopped, stopping = true, nil
			case <-ctx.Done():
				return
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, notifyTimeout)
		err := n.send(rctx, doc)
		cancel()
		n.result(err)
		if err == nil {
			backoff = 0
			continue
		}
		n.putBack(doc)
		if stopped && errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		backoff = nextBackoff(backoff)
		timer.Reset(backoff)
		select {
		case <-timer.C:
		case <-ending:
			ending, backoff = nil, 0
		case <-stopping:
			// The last document is tried at once, and then as often as
			// the final timeout allows.
			stopped, stopping, backoff = true, nil, 0
		case <-ctx.Done():
			return
		}
	}
}

// nextBackoff is the wait after a failed delivery that followed a wait of
// d (0 after a success): doubling from notifyBackoffMin to
// notifyBackoffMax.
func nextBackoff(d time.Duration) time.Duration {
	return min(max(2*d, notifyBackoffMin), notifyBackoffMax)
}

// startNotifier tells Config.NotifyURL the status document at once and on
// every change, until the returned stop is called; stop offers the last
// document, and returns once it is delivered or notifyFinalTimeout after
// ctx ended. Without a NotifyURL it does nothing.
func (e *Elector) startNotifier(ctx context.Context) (stop func()) {
	if e.cfg.NotifyURL == "" {
		return func() {}
	}
	e.log.Info("telling the application the election's state", "url", e.cfg.NotifyURL)
	e.metrics.notifyOn()
	return e.feedTo(ctx, newNotifier(newNotifyClient(e.cfg.NotifyURL).post, e.notifyResult()))
}

// feedTo delivers through n (see notifier.start) what feed offers it, on a
// goroutine of its own; stop ends the feed, then the deliveries.
func (e *Elector) feedTo(ctx context.Context, n *notifier) (stop func()) {
	stopDelivery := n.start(ctx)
	// Subscribed before the first look, so no change is missed.
	changes, unsubscribe := e.subscribe()
	quit := make(chan struct{})
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		e.feed(n, changes, quit)
	}()
	return func() {
		close(quit)
		<-fed
		unsubscribe()
		stopDelivery()
	}
}

// feed offers n the status document at once and on every change of
// is_leader, leader or epoch, and once more when quit is closed if it
// changed. It runs on its own goroutine: the election only wakes it.
func (e *Elector) feed(n *notifier, changes <-chan struct{}, quit <-chan struct{}) {
	var last view
	var told uint64 // healthyAgain when last offered
	first, done := true, false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		v := e.viewAt(now)
		e.mu.Lock()
		again := e.healthyAgain
		e.mu.Unlock()
		if first || v != last || again != told {
			first, last, told = false, v, again
			body, _ := json.Marshal(v.status(e.cfg.ID, now))
			// What GET / answers, byte for byte but the time.
			n.offer(append(body, '\n'))
		}
		if done {
			return
		}
		timer.Stop()
		if lapse := e.lapseOf(v); !lapse.IsZero() {
			timer.Reset(lapse.Sub(now))
		}
		select {
		case <-changes:
		case <-timer.C:
		case <-quit:
			done = true
		}
	}
}

// lapseOf is when v, as viewAt judged it, may change with nothing to wake
// the subscribers: when the lease of the leader a follower names runs out,
// or when a leader's renew deadline passes. Zero when it holds until the
// next change.
func (e *Elector) lapseOf(v view) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.leading && !v.isLeader && time.Now().Before(e.claimAt):
		// A leader of a lock it made or adopted says so from claimAt.
		return e.claimAt
	case v.isLeader:
		return e.renewedAt.Add(e.cfg.RenewDeadline)
	case v.leader != "" && e.observed != nil:
		return e.observedAt.Add(e.observed.record.leaseDuration())
	}
	return time.Time{}
}

// notifyResult counts and logs the outcome of each delivery. The first
// failure in a row is logged, the others at -v=1, and the recovery again.
func (e *Elector) notifyResult() func(error) {
	failing := 0
	return func(err error) {
		if err == nil {
			e.metrics.notifyDelivered(time.Now())
			if failing > 0 {
				e.log.Info("told the application the election's state again", "url", e.cfg.NotifyURL, "failedDeliveries", failing)
			}
			failing = 0
			return
		}
		e.metrics.notifyFailed()
		failing++
		if failing == 1 {
			e.log.Info("could not tell the application the election's state (-notify-url); retrying with backoff", "url", e.cfg.NotifyURL, "err", err.Error())
		} else {
			e.log.V(1).Info("could not tell the application the election's state", "url", e.cfg.NotifyURL, "failedDeliveries", failing, "err", err.Error())
		}
	}
}

// notifyClient POSTs documents to one URL.
type notifyClient struct {
	url    string
	client *http.Client
}

func newNotifyClient(url string) *notifyClient {
	return &notifyClient{url: url, client: &http.Client{
		Transport: &http.Transport{
			// A connection per delivery: deliveries are seconds apart or
			// more, and an idle connection the application has closed
			// would fail the next one.
			DisableKeepAlives: true,
			// As for the health check: an application's own certificate
			// is often self-signed, and the document is no secret.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
		// A 3xx is not a delivery: a POST redirected is a GET.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// post delivers doc; an answer other than 2xx is an error.
func (c *notifyClient) post(ctx context.Context, doc []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(doc))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := askApp(c.client, req)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return fmt.Errorf("answered %s (to %s): redirects are not followed; point -notify-url at the final address", resp.Status, resp.Header.Get("Location"))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// notifyMetrics are the metrics of the deliveries, kept in Metrics under
// its lock.
type notifyMetrics struct {
	failures    uint64
	lastSuccess float64
}

// notifyOn writes the delivery metrics from now on, at 0 until the first
// delivery.
func (m *Metrics) notifyOn() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.notify == nil {
		m.notify = &notifyMetrics{}
	}
}

func (m *Metrics) notifyFailed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notify.failures++
}

func (m *Metrics) notifyDelivered(at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notify.lastSuccess = float64(at.UnixNano()) / 1e9
}

// write writes the delivery metrics; nothing without a NotifyURL (nil).
func (n *notifyMetrics) write(p *promWriter) {
	if n == nil {
		return
	}
	p.metric("elector_notify_failures_total", "counter",
		"Failed deliveries of the status document to -notify-url (no connection, no answer in time, or not 2xx).", "", float64(n.failures))
	p.metric("elector_notify_last_success_timestamp_seconds", "gauge",
		"Unix time of the last delivery of the status document to -notify-url that the application answered 2xx; 0 before the first.", "", n.lastSuccess)
}
