package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	coordinationv1 "k8s.io/api/coordination/v1"
)

// fakeApp is a notifier's send: it records every attempt with its bubble
// time, and answers as fail says.
type fakeApp struct {
	mu       sync.Mutex
	start    time.Time
	attempts []attempt
	// fail decides the outcome of the attempt; nil delivers everything.
	// It may block, until ctx ends.
	fail func(ctx context.Context, doc string) error
}

type attempt struct {
	at  time.Duration // since start
	doc string
	ok  bool
}

func newFakeApp(fail func(ctx context.Context, doc string) error) *fakeApp {
	return &fakeApp{start: time.Now(), fail: fail}
}

func (a *fakeApp) send(ctx context.Context, doc []byte) error {
	var err error
	if a.fail != nil {
		err = a.fail(ctx, string(doc))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts = append(a.attempts, attempt{at: time.Since(a.start), doc: string(doc), ok: err == nil})
	return err
}

func (a *fakeApp) got() []attempt {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]attempt(nil), a.attempts...)
}

func (a *fakeApp) delivered() []string {
	var out []string
	for _, at := range a.got() {
		if at.ok {
			out = append(out, at.doc)
		}
	}
	return out
}

var errRefused = errors.New("answered 503 Service Unavailable")

// refusedWhile is a fakeApp's answer: errRefused while down is true.
func refusedWhile(down *atomic.Bool) func(context.Context, string) error {
	return func(context.Context, string) error {
		if down.Load() {
			return errRefused
		}
		return nil
	}
}

// TestNotifyBackoff: a delivery that keeps failing is retried after 100 ms,
// doubling to 10 s; a success resets the backoff.
func TestNotifyBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		app := newFakeApp(refusedWhile(&down))
		n := newNotifier(app.send, func(error) {})
		stop := n.start(t.Context())
		n.offer([]byte("1"))
		time.Sleep(40 * time.Second)
		synctest.Wait()
		var at []time.Duration
		for _, a := range app.got() {
			at = append(at, a.at)
		}
		ms := func(v ...int) []time.Duration {
			var out []time.Duration
			for _, x := range v {
				out = append(out, time.Duration(x)*time.Millisecond)
			}
			return out
		}
		// Waits of 100, 200, 400, 800, 1600, 3200, 6400, then 10000 ms.
		want := ms(0, 100, 300, 700, 1500, 3100, 6300, 12700, 22700, 32700)
		if diff := cmp.Diff(want, at); diff != "" {
			t.Errorf("attempts at (-want +got):\n%s", diff)
		}

		// Back up: the retry 10 s later delivers, and the next failure
		// waits 100 ms again.
		down.Store(false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := app.delivered(); !cmp.Equal(got, []string{"1"}) {
			t.Fatalf("delivered %q, want [1]", got)
		}
		down.Store(true)
		before := len(app.got())
		from := time.Since(app.start)
		n.offer([]byte("2"))
		time.Sleep(350 * time.Millisecond)
		synctest.Wait()
		var after []time.Duration
		for _, a := range app.got()[before:] {
			after = append(after, a.at-from)
		}
		if diff := cmp.Diff(ms(0, 100, 300), after); diff != "" {
			t.Errorf("after a success, attempts at (-want +got):\n%s", diff)
		}
		stop()
	})
}

func TestNextBackoff(t *testing.T) {
	for _, tt := range []struct{ after, want time.Duration }{
		{0, 100 * time.Millisecond},
		{100 * time.Millisecond, 200 * time.Millisecond},
		{3200 * time.Millisecond, 6400 * time.Millisecond},
		{6400 * time.Millisecond, 10 * time.Second},
		{10 * time.Second, 10 * time.Second},
	} {
		if got := nextBackoff(tt.after); got != tt.want {
			t.Errorf("nextBackoff(%s) = %s, want %s", tt.after, got, tt.want)
		}
	}
}

// TestNotifyLatestWins: documents offered while one is being delivered, or
// while a failed one waits for its retry, replace each other; only the
// newest is sent next, and never an older one after it.
func TestNotifyLatestWins(t *testing.T) {
	t.Run("while sending", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			app := newFakeApp(func(_ context.Context, doc string) error {
				if doc == "1" {
					<-release
				}
				return nil
			})
			n := newNotifier(app.send, func(error) {})
			stop := n.start(t.Context())
			n.offer([]byte("1"))
			synctest.Wait()
			// Sending 1 blocks; offers do not.
			n.offer([]byte("2"))
			n.offer([]byte("3"))
			close(release)
			synctest.Wait()
			stop()
			if diff := cmp.Diff([]string{"1", "3"}, app.delivered()); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
		})
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			app := newFakeApp(func(_ context.Context, doc string) error {
				if doc == "1" {
					return errRefused
				}
				return nil
			})
			n := newNotifier(app.send, func(error) {})
			stop := n.start(t.Context())
			n.offer([]byte("1"))
			time.Sleep(50 * time.Millisecond)
			n.offer([]byte("2"))
			time.Sleep(time.Second)
			synctest.Wait()
			stop()
			// The backoff still holds for the newer document: the
			// application failed 50 ms ago.
			want := []attempt{{0, "1", false}, {100 * time.Millisecond, "2", true}}
			if diff := cmp.Diff(want, app.got(), cmp.AllowUnexported(attempt{})); diff != "" {
				t.Errorf("attempts (-want +got):\n%s", diff)
			}
		})
	})
}

// TestNotifyOrder offers numbered documents at random instants to an
// application that fails and stalls at random: every attempt sends a
// document no older than the one before, no delivered one is sent again
// unless a newer one came, and the last offered is delivered.
func TestNotifyOrder(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, 0))
				var mu sync.Mutex
				app := newFakeApp(func(ctx context.Context, doc string) error {
					mu.Lock()
					stall := time.Duration(r.Int64N(int64(3 * time.Second)))
					fail := r.IntN(3) == 0
					mu.Unlock()
					select {
					case <-time.After(stall):
					case <-ctx.Done():
						return ctx.Err()
					}
					if fail {
						return errRefused
					}
					return nil
				})
				n := newNotifier(app.send, func(error) {})
				stop := n.start(t.Context())
				const docs = 200
				for i := 1; i <= docs; i++ {
					mu.Lock()
					wait := time.Duration(r.Int64N(int64(500 * time.Millisecond)))
					mu.Unlock()
					time.Sleep(wait)
					n.offer([]byte(strconv.Itoa(i)))
				}
				// Some 50 more attempts at the longest backoff: the last
				// document is delivered unless all of them fail, (5/9)^50.
				time.Sleep(10 * time.Minute)
				synctest.Wait()
				stop()

				prev, lastOK := 0, 0
				for _, a := range app.got() {
					i, _ := strconv.Atoi(a.doc)
					if i < prev {
						t.Fatalf("sent %d after %d", i, prev)
					}
					if a.ok && i <= lastOK {
						t.Fatalf("delivered %d again", i)
					}
					prev = i
					if a.ok {
						lastOK = i
					}
				}
				if lastOK != docs {
					t.Errorf("last delivered %d, want %d", lastOK, docs)
				}
				// The schedule must have tested something: failures, and
				// documents replaced before they were sent.
				failed, sent := 0, map[string]bool{}
				for _, a := range app.got() {
					sent[a.doc] = true
					if !a.ok {
						failed++
					}
				}
				if failed == 0 || len(sent) == docs {
					t.Errorf("%d failed attempts, %d of %d documents sent: the schedule tests no retry or no replacement", failed, len(sent), docs)
				}
			})
		})
	}
}

// TestNotifyStop: on stop the last document is delivered, and stop returns
// within notifyFinalTimeout of the context's end whatever the application
// does; with nothing left to deliver, at once.
func TestNotifyStop(t *testing.T) {
	for _, tt := range []struct {
		name string
		fail func(ctx context.Context, doc string) error
		// want: the documents delivered; within: when stop returns, from
		// the context's end.
		want   []string
		within time.Duration
	}{
		{"healthy", nil, []string{"leader", "final"}, 200 * time.Millisecond},
		{"fails three times", failTimes(3), []string{"final"}, 500 * time.Millisecond},
		{"refuses", func(context.Context, string) error { return errRefused }, nil, notifyFinalTimeout},
		{"hangs", func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }, nil, notifyFinalTimeout},
		// The application has exited, as it does before its native
		// sidecar: the final document is not retried for a second.
		{"has exited", func(context.Context, string) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}, nil, 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				app := newFakeApp(tt.fail)
				n := newNotifier(app.send, func(error) {})
				ctx, cancel := context.WithCancel(t.Context())
				stop := n.start(ctx)
				n.offer([]byte("leader"))
				synctest.Wait()
				// SIGTERM, and the release of the lock 200 ms later.
				cancel()
				ended := time.Now()
				time.Sleep(200 * time.Millisecond)
				n.offer([]byte("final"))
				stop()
				if took := time.Since(ended); took > tt.within {
					t.Errorf("stop returned %s after the context ended, want within %s", took, tt.within)
				}
				if diff := cmp.Diff(tt.want, app.delivered()); diff != "" {
					t.Errorf("delivered (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// failTimes fails the first n attempts.
func failTimes(n int) func(context.Context, string) error {
	var mu sync.Mutex
	return func(context.Context, string) error {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			n--
			return errRefused
		}
		return nil
	}
}

// TestNotifyFeed drives the feed of a loop-less elector: the document at
// start, one per change (not per wake-up), the lapse of a lease and of a
// renew deadline with no wake-up, and each document equal to GET /'s body
// at that instant.
func TestNotifyFeed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := electorFor("a", false, "")
		e.subscribers = map[chan struct{}]struct{}{}
		srv := NewServer(e, NewMetrics())
		app := newFakeApp(nil)
		var mu sync.Mutex
		var mismatches []string
		send := func(ctx context.Context, doc []byte) error {
			// Delivered on the instant it was made: the bubble's clock
			// stands still while its goroutines run.
			w := httptest.NewRecorder()
			srv.server.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathStatus, nil))
			if w.Body.String() != string(doc) {
				mu.Lock()
				mismatches = append(mismatches, "GET / "+w.Body.String()+" notified "+string(doc))
				mu.Unlock()
			}
			return app.send(ctx, doc)
		}
		ctx, cancel := context.WithCancel(t.Context())
		stop := e.feedTo(ctx, newNotifier(send, func(error) {}))
		step := func(f func()) {
			e.mu.Lock()
			f()
			e.mu.Unlock()
			e.notify()
			synctest.Wait()
		}
		synctest.Wait()

		// b leads, for a lease of 10 s; a wake-up with no change sends
		// nothing.
		step(func() {
			e.observed = &observation{record: Record{HolderIdentity: "b", LeaseDurationSeconds: 10}, object: &coordinationv1.Lease{}, epoch: 5}
			e.observedAt = time.Now()
		})
		e.notify()
		synctest.Wait()
		// Its lease runs out with nothing to wake the feed.
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		// a leads; its renew deadline (5 s) passes with no renewal.
		step(func() {
			e.leading, e.renewedAt, e.epoch = true, time.Now(), 9
		})
		time.Sleep(5*time.Second + time.Millisecond)
		synctest.Wait()
		// a renews, and leads again. On shutdown, it stops leading with no
		// wake-up: the feed's last look at quit finds it.
		step(func() { e.renewedAt = time.Now() })
		cancel()
		e.mu.Lock()
		e.leading = false
		e.mu.Unlock()
		stop()

		var got []string
		for _, d := range app.delivered() {
			st := strings.TrimSpace(d)
			// The time is checked against GET / above; here, the changes.
			i := strings.Index(st, `"timestamp"`)
			j := strings.Index(st, `"epoch"`)
			got = append(got, st[:i]+st[j:])
		}
		want := []string{
			`{"is_leader":false,"leader":"","node":"a","epoch":0}`,
			`{"is_leader":false,"leader":"b","node":"a","epoch":5}`,
			`{"is_leader":false,"leader":"","node":"a","epoch":5}`,
			`{"is_leader":true,"leader":"a","node":"a","epoch":9}`,
			`{"is_leader":false,"leader":"","node":"a","epoch":5}`,
			`{"is_leader":true,"leader":"a","node":"a","epoch":9}`,
			`{"is_leader":false,"leader":"","node":"a","epoch":5}`,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("documents (-want +got):\n%s", diff)
		}
		for _, m := range mismatches {
			t.Errorf("not GET /'s body: %s", m)
		}
	})
}

// TestNotifyPost checks the request the application gets, and which
// answers count as delivered.
func TestNotifyPost(t *testing.T) {
	var gotMethod, gotType, gotBody string
	code := http.StatusOK
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotType = r.Method, r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		if code == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
	}))
	defer app.Close()
	c := newNotifyClient(app.URL + "/elector")
	doc := []byte(`{"is_leader":true}` + "\n")
	for _, tt := range []struct {
		code int
		ok   bool
	}{{200, true}, {204, true}, {302, false}, {404, false}, {503, false}} {
		code = tt.code
		err := c.post(context.Background(), doc)
		if (err == nil) != tt.ok {
			t.Errorf("answer %d: post = %v, want delivered %v", tt.code, err, tt.ok)
		}
		if gotMethod != http.MethodPost || gotType != "application/json" || gotBody != string(doc) {
			t.Errorf("answer %d: got %s, Content-Type %q, body %q", tt.code, gotMethod, gotType, gotBody)
		}
	}
	app.Close()
	if err := c.post(context.Background(), doc); err == nil {
		t.Error("post to a closed server: nil error")
	}
}

func TestValidateNotifyURL(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"http://localhost:8080/elector", ""},
		{"https://app.example:8443/leader?x=1", ""},
		{"localhost:8080/elector", `"localhost:8080/elector" is not an http or https URL (example: http://localhost:8080/elector)`},
		{"ftp://localhost/x", `"ftp://localhost/x" is not an http or https URL (example: http://localhost:8080/elector)`},
		{"http:///elector", `"http:///elector" names no host (example: http://localhost:8080/elector)`},
		{"http://a b", `"http://a b" is not a URL`},
	} {
		err := ValidateNotifyURL(tt.url)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateNotifyURL(%q) = %v, want nil", tt.url, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateNotifyURL(%q) = %v, want %q", tt.url, err, tt.want)
		}
	}
}

// TestNotifyMetrics: the delivery metrics appear, at 0, only with a
// NotifyURL, and count.
func TestNotifyMetrics(t *testing.T) {
	m := NewMetrics()
	var b bytes.Buffer
	_, _ = m.WriteTo(&b)
	if strings.Contains(b.String(), "elector_notify_") {
		t.Errorf("notify metrics without a NotifyURL:\n%s", b.String())
	}
	m.notifyOn()
	m.notifyFailed()
	m.notifyFailed()
	m.notifyDelivered(time.Unix(1700000000, 500e6))
	b.Reset()
	_, _ = m.WriteTo(&b)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(bytes.NewReader(b.Bytes())); err != nil {
		t.Errorf("not valid Prometheus text: %v", err)
	}
	for _, want := range []string{"\nelector_notify_failures_total 2\n", "\nelector_notify_last_success_timestamp_seconds 1.7000000005e+09\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
	}
}

// feedInto runs e's feed into a notifier that delivers with send, as
// startNotifier does; stop ends both.
func feedInto(e *Elector, send func(context.Context, []byte) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopFeed := e.feedTo(ctx, newNotifier(send, func(error) {}))
	return func() {
		cancel()
		stopFeed()
	}
}

// statusLog records the documents delivered, decoded.
type statusLog struct {
	mu   sync.Mutex
	docs []Status
}

func (l *statusLog) send(_ context.Context, doc []byte) error {
	var st Status
	if err := json.Unmarshal(doc, &st); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.docs = append(l.docs, st)
	return nil
}

func (l *statusLog) last() (Status, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.docs[len(l.docs)-1], len(l.docs)
}

// TestNotifyClaimAt: a leader of a lock it made says it leads from claimAt,
// with nothing to wake the subscribers then: the feed's timer tells the
// application.
func TestNotifyClaimAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := electorFor("a", true, "a")
		e.metrics = NewMetrics()
		e.subscribers = map[chan struct{}]struct{}{}
		e.claimAt = time.Now().Add(3 * time.Second)
		var got statusLog
		stop := feedInto(e, got.send)
		defer stop()
		synctest.Wait()
		if st, _ := got.last(); st.IsLeader {
			t.Fatalf("told is_leader: true before claimAt: %+v", st)
		}
		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		if st, _ := got.last(); !e.Status().IsLeader || !st.IsLeader {
			t.Errorf("after claimAt, GET / says is_leader %t and the application was last told %+v", e.Status().IsLeader, st)
		}
	})
}

// TestNotifyFinalCutsBackoff: an application that was down (the notifier
// waits out a long backoff) and is back when the elector shuts down is told
// the final document at once, not after the backoff or the release.
func TestNotifyFinalCutsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		app := newFakeApp(refusedWhile(&down))
		n := newNotifier(app.send, func(error) {})
		ctx, cancel := context.WithCancel(t.Context())
		stop := n.start(ctx)
		n.offer([]byte("leader"))
		time.Sleep(25 * time.Second) // the backoff is at its 10 s now
		down.Store(false)
		cancel() // SIGTERM
		time.Sleep(10 * time.Millisecond)
		n.offer([]byte("final"))
		time.Sleep(100 * time.Millisecond)
		if got := app.delivered(); !slices.Contains(got, "final") {
			t.Errorf("100 ms after the final document was offered, delivered %v", got)
		}
		stop()
	})
}

// TestNotifyHealthyAgain: an application that returns to health (it may
// have restarted, and forgotten) is told the state again, once, though the
// state did not change.
func TestNotifyHealthyAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := electorFor("a", false, "b")
		e.metrics = NewMetrics()
		e.subscribers = map[chan struct{}]struct{}{}
		var got statusLog
		stop := feedInto(e, got.send)
		defer stop()
		synctest.Wait()
		_, before := got.last()
		e.appHealthChanged(false, "probe failed")
		synctest.Wait()
		e.appHealthChanged(true, "probe answered 200")
		synctest.Wait()
		if st, n := got.last(); n != before+1 || st.IsLeader || st.Leader != "b" {
			t.Errorf("after the application's return to health: %d documents (had %d), last %+v; want one more, the same state", n, before, st)
		}
	})
}
