package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sample is one answer to GET /. The participant computed it at some
// instant in [from, to].
//
// The timing rule: an answer describes the participant at some instant
// between when the request was sent (from) and when the answer arrived
// (to), with one exception. A request sent while the participant was
// stopped (after every one of its threads was seen stopped, before SIGCONT
// was sent) waits in the socket and is answered after SIGCONT: it counts
// from the SIGCONT, not from when it was sent. A stopped process computes
// nothing, so this is exact, and it matters: dating that first answer back
// to when it was sent would place what a resumed leader says before its
// successor took over, and hide exactly the overlap that freezing a leader
// provokes. A request sent before the process was seen stopped may have
// been answered before the stop took effect, so it keeps its sending time.
type sample struct {
	from, to time.Time
	leader   bool
}

// answeredFrom is the earliest instant an answer to a request sent at sent
// can describe, given the participant's freezes.
func answeredFrom(sent time.Time, freezes []freeze) time.Time {
	for _, f := range freezes {
		if f.stopped.IsZero() || f.resumed.IsZero() {
			continue
		}
		if !sent.Before(f.stopped) && sent.Before(f.resumed) {
			return f.resumed
		}
	}
	return sent
}

// term is a run of consecutive is_leader=true answers of one participant:
// it led from some instant at or before firstTo to some instant at or after
// lastFrom. endTo is when the first is_leader=false answer after it
// arrived (zero when none did). A probe term is a single answer to the
// request sent while the participant was stopped.
type term struct {
	firstFrom, firstTo, lastFrom, lastTo, endTo time.Time
	probe                                       bool
}

// overlap reports whether two participants' terms certainly share an
// instant: each began before the other certainly ended. The rule assumes a
// participant that answered true twice with no false in between led
// throughout; answers 2 ms apart leave no room for anything else.
func overlap(a, b term) bool {
	return a.lastFrom.After(b.firstTo) && b.lastFrom.After(a.firstTo)
}

// checker polls every participant's GET / on a kept-alive connection of
// its own, every pollPeriod at most, and records terms.
type checker struct {
	ctx           context.Context
	pollPeriod    time.Duration
	answerTimeout time.Duration
	wg            sync.WaitGroup

	mu       sync.Mutex
	problems []string
	// intervals between two requests to a running participant.
	intervals []time.Duration
	// probes answered, and how many of those said is_leader=true.
	probes, probesTrue int
}

func (c *checker) report(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
}

// watch starts polling p and watching that it neither exits on its own nor
// leaves a request unanswered while it runs.
func (c *checker) watch(p *participant) {
	c.wg.Add(2)
	go c.poll(p)
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var reported time.Time
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-p.Done():
				p.mu.Lock()
				ended := p.ended
				p.mu.Unlock()
				if ended.IsZero() {
					c.report("%s exited on its own: %v; log %s:\n%s", p.id, p.Err(), p.logPath, p.Tail(30))
				}
				return
			case now := <-tick.C:
				p.mu.Lock()
				sent, ended := p.inflight, p.ended
				due := excusedUntil(sent, p.freezes, now).Add(c.answerTimeout)
				p.mu.Unlock()
				if !sent.IsZero() && ended.IsZero() && now.After(due) && !sent.Equal(reported) {
					reported = sent
					c.report("%s has not answered GET / sent at %s (running, not stopped)", p.id, sent.Format("15:04:05.000"))
				}
			}
		}
	}()
}

// excusedUntil is when a request sent at sent can first be expected to be
// answered: after the SIGCONT of any freeze it overlaps, never while one is
// under way.
func excusedUntil(sent time.Time, freezes []freeze, now time.Time) time.Time {
	out := sent
	for _, f := range freezes {
		if f.signalled.After(now) {
			continue
		}
		if f.resumed.IsZero() {
			return now
		}
		if f.resumed.After(sent) && f.resumed.After(out) {
			out = f.resumed
		}
	}
	return out
}

var request = []byte("GET / HTTP/1.1\r\nHost: elector\r\n\r\n")

// status is the part of GET / the checker reads.
type status struct {
	IsLeader bool `json:"is_leader"`
}

// get sends GET / on conn and reads the answer.
func get(conn net.Conn, r *bufio.Reader) (bool, error) {
	if _, err := conn.Write(request); err != nil {
		return false, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(line, "HTTP/1.1 200") {
		return false, fmt.Errorf("GET / = %s", strings.TrimSpace(line))
	}
	length := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false, err
		}
		if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	if length < 0 {
		return false, errors.New("GET / answered without Content-Length")
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return false, err
	}
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		return false, fmt.Errorf("GET / body %q: %w", body, err)
	}
	return st.IsLeader, nil
}

// poll asks p GET / until p exits or the run ends. No request has a
// timeout: a stopped participant answers when it resumes, and the watch
// goroutine reports a running one that does not.
func (c *checker) poll(p *participant) {
	defer c.wg.Done()
	var (
		conn net.Conn
		r    *bufio.Reader
		stop func() bool
	)
	closeConn := func() {
		if conn != nil {
			stop()
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	failures := 0
	for c.ctx.Err() == nil && !p.Exited() {
		if conn == nil {
			var err error
			if conn, err = net.DialTimeout("tcp", p.addr, time.Second); err != nil {
				conn = nil
				c.failed(p, time.Now(), time.Now(), err, &failures)
				continue
			}
			r = bufio.NewReaderSize(conn, 4096)
			cn := conn
			stop = context.AfterFunc(c.ctx, func() { cn.Close() })
		}
		sent := time.Now()
		p.mu.Lock()
		p.inflight = sent
		p.mu.Unlock()
		leader, err := get(conn, r)
		got := time.Now()
		p.mu.Lock()
		p.inflight = time.Time{}
		p.mu.Unlock()
		if err != nil {
			closeConn()
			c.failed(p, sent, got, err, &failures)
			continue
		}
		failures = 0
		c.record(p, sent, got, leader)
		// Aim a little early: on a loaded machine a sleep ends late.
		if d := c.pollPeriod*3/4 - time.Since(sent); d > 0 {
			time.Sleep(d)
		}
	}
}

// failed handles a request that got no answer. One failure in a row is
// retried at once on a new connection (a server may close a kept-alive
// connection); a second is reported unless the participant was asked to
// end, was stopped meanwhile, or exited.
func (c *checker) failed(p *participant, sent, got time.Time, err error, failures *int) {
	*failures++
	p.mu.Lock()
	excused := !p.ended.IsZero() || excusedUntil(sent, p.freezes, got) != sent
	p.mu.Unlock()
	if *failures >= 2 && !excused && c.ctx.Err() == nil {
		select {
		case <-p.Done():
		case <-time.After(50 * time.Millisecond):
			// Still alive 50 ms later: it should have answered.
			if !p.Exited() {
				p.mu.Lock()
				p.unanswered++
				p.mu.Unlock()
				c.report("%s did not answer GET / sent at %s: %v", p.id, sent.Format("15:04:05.000"), err)
			}
		}
	}
	if *failures >= 2 {
		time.Sleep(10 * time.Millisecond)
	}
}

// record adds an answer to p's terms.
func (c *checker) record(p *participant, sent, got time.Time, leader bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := sample{from: answeredFrom(sent, p.freezes), to: got, leader: leader}
	p.answers++
	if !p.lastSent.IsZero() && p.ended.IsZero() && excusedUntil(p.lastSent, p.freezes, sent).Equal(p.lastSent) {
		c.mu.Lock()
		c.intervals = append(c.intervals, sent.Sub(p.lastSent))
		c.mu.Unlock()
	}
	p.lastSent = sent
	switch {
	case s.leader && p.open == nil:
		p.open = &term{firstFrom: s.from, firstTo: s.to, lastFrom: s.from, lastTo: s.to}
	case s.leader:
		p.open.lastFrom, p.open.lastTo = s.from, s.to
	case p.open != nil:
		p.open.endTo = s.to
		p.terms = append(p.terms, *p.open)
		p.open = nil
	}
}

// probe sends one request on a new connection to p, which was just seen
// stopped: its answer comes once p resumes, and is the first thing p says
// then. It is recorded as a term of its own when it says true.
func (c *checker) probe(p *participant) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			c.report("%s: no connection for the request sent while it was stopped: %v", p.id, err)
			return
		}
		stop := context.AfterFunc(c.ctx, func() { conn.Close() })
		defer stop()
		defer conn.Close()
		sent := time.Now()
		leader, err := get(conn, bufio.NewReader(conn))
		got := time.Now()
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			if p.ended.IsZero() && c.ctx.Err() == nil {
				c.report("%s did not answer the request sent while it was stopped: %v", p.id, err)
			}
			return
		}
		from := answeredFrom(sent, p.freezes)
		c.mu.Lock()
		c.probes++
		if leader {
			c.probesTrue++
		}
		c.mu.Unlock()
		if leader {
			p.terms = append(p.terms, term{firstFrom: from, firstTo: got, lastFrom: from, lastTo: got, probe: true})
		}
	}()
}

// leading reports whether p's latest answer, no older than fresh, said it
// leads.
func (p *participant) leading(fresh time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open != nil && time.Since(p.open.lastTo) < fresh
}

// allTerms is every term of p, the open one included.
func (p *participant) allTerms() []term {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := append([]term(nil), p.terms...)
	if p.open != nil {
		out = append(out, *p.open)
	}
	return out
}

// tooSoon reports whether b began less than gap after a last said it led:
// the elector promises ttl - renew deadline between two leaders, unless the
// first released the lock. d is the most that can have passed.
func tooSoon(a, b term, gap time.Duration) (d time.Duration, soon bool) {
	d = b.firstTo.Sub(a.lastFrom)
	return d, d < gap
}

// violation is two terms of two participants of one election that broke
// a rule: they overlap, or the second began too soon after the first.
type violation struct {
	election string
	a, b     string
	ta, tb   term
	overlap  bool
	d, gap   time.Duration
}

func (v violation) String() string {
	f := func(t time.Time) string { return t.Format("15:04:05.000") }
	what := fmt.Sprintf("%s and %s both said is_leader=true at one moment", v.a, v.b)
	if !v.overlap {
		what = fmt.Sprintf("%s led at most %s after %s last did, need %s", v.b, v.d.Round(time.Millisecond), v.a, v.gap)
	}
	return fmt.Sprintf("election %s: %s: %s led from at most %s to at least %s%s, %s from at most %s to at least %s%s",
		v.election, what,
		v.a, f(v.ta.firstTo), f(v.ta.lastFrom), probeNote(v.ta),
		v.b, f(v.tb.firstTo), f(v.tb.lastFrom), probeNote(v.tb))
}

func probeNote(t term) string {
	if t.probe {
		return " (its first answer after SIGCONT)"
	}
	return ""
}

// violations checks every pair of terms of two participants of es.
func violations(es *electionState) []violation {
	es.mu.Lock()
	members := append([]*participant(nil), es.members...)
	es.mu.Unlock()
	gap := es.ttl - es.renew()
	var out []violation
	for _, a := range members {
		ta := a.allTerms()
		a.mu.Lock()
		released := a.released
		a.mu.Unlock()
		var final time.Time
		for _, t := range ta {
			if t.firstFrom.After(final) {
				final = t.firstFrom
			}
		}
		for _, b := range members {
			if a == b {
				continue
			}
			for _, tb := range b.allTerms() {
				for _, t := range ta {
					switch {
					case overlap(t, tb):
						// Each pair once.
						if a.id < b.id {
							out = append(out, violation{election: es.name, a: a.id, b: b.id, ta: t, tb: tb, overlap: true})
						}
					case tb.firstFrom.Before(t.firstFrom):
					case !released.IsZero() && t.firstFrom.Equal(final) && !tb.firstTo.Before(released):
						// A release: the next leader may follow at once.
					default:
						if d, soon := tooSoon(t, tb, gap); soon {
							out = append(out, violation{election: es.name, a: a.id, b: b.id, ta: t, tb: tb, d: d, gap: gap})
						}
					}
				}
			}
		}
	}
	return out
}
