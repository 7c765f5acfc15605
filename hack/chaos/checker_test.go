package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// span is a term from its first and last answers, each [from, to] in ms.
func span(firstFrom, firstTo, lastFrom, lastTo int) term {
	return term{firstFrom: at(firstFrom), firstTo: at(firstTo), lastFrom: at(lastFrom), lastTo: at(lastTo)}
}

func TestOverlap(t *testing.T) {
	for _, tt := range []struct {
		name string
		a, b term
		want bool
	}{
		{"apart", span(0, 1, 100, 101), span(200, 201, 300, 301), false},
		{"b began before a's last true was asked", span(0, 1, 100, 101), span(98, 99, 300, 301), true},
		{"b's first answer and a's last may be the same instant", span(0, 1, 100, 102), span(100, 102, 300, 301), false},
		{"a single answer inside b's term", span(150, 151, 150, 151), span(100, 101, 200, 201), true},
		{"a single answer that may predate b", span(99, 151, 99, 151), span(100, 101, 200, 201), false},
		{"a inside b", span(120, 121, 130, 131), span(100, 101, 200, 201), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := overlap(tt.a, tt.b); got != tt.want {
				t.Errorf("overlap(a, b) = %v, want %v", got, tt.want)
			}
			if got := overlap(tt.b, tt.a); got != tt.want {
				t.Errorf("overlap(b, a) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTooSoon(t *testing.T) {
	a := span(0, 1, 100, 101)
	for _, tt := range []struct {
		name string
		b    term
		want bool
	}{
		{"a gap's worth after", span(1099, 1100, 2000, 2001), false},
		{"just under", span(1098, 1099, 2000, 2001), true},
		{"at once", span(101, 102, 2000, 2001), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := tooSoon(a, tt.b, time.Second); got != tt.want {
				t.Errorf("tooSoon = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAnsweredFrom checks the timing rule: a request sent while the
// participant was seen stopped counts from SIGCONT; one sent before it was
// seen stopped, or after it resumed, from when it was sent.
func TestAnsweredFrom(t *testing.T) {
	freezes := []freeze{{signalled: at(100), stopped: at(102), resumed: at(5000)}}
	for _, tt := range []struct {
		name string
		sent time.Time
		want time.Time
	}{
		{"before SIGSTOP", at(50), at(50)},
		{"after SIGSTOP, before seen stopped", at(101), at(101)},
		{"while stopped", at(102), at(5000)},
		{"while stopped, late", at(4999), at(5000)},
		{"after SIGCONT", at(5000), at(5000)},
		{"long after", at(6000), at(6000)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := answeredFrom(tt.sent, freezes); !got.Equal(tt.want) {
				t.Errorf("answeredFrom(%v) = %v, want %v", tt.sent.Sub(t0), got.Sub(t0), tt.want.Sub(t0))
			}
		})
	}
	still := []freeze{{signalled: at(100), stopped: at(102)}}
	if got := answeredFrom(at(200), still); !got.Equal(at(200)) {
		t.Errorf("answeredFrom while still stopped = %v, want the sending time", got.Sub(t0))
	}
}

func TestExcusedUntil(t *testing.T) {
	freezes := []freeze{{signalled: at(100), stopped: at(102), resumed: at(5000)}}
	for _, tt := range []struct {
		name      string
		sent, now time.Time
		want      time.Time
	}{
		{"no freeze since", at(6000), at(7000), at(6000)},
		{"sent before the freeze", at(50), at(7000), at(5000)},
		{"sent during the freeze", at(200), at(7000), at(5000)},
		{"freeze not yet signalled", at(50), at(90), at(50)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := excusedUntil(tt.sent, freezes, tt.now); !got.Equal(tt.want) {
				t.Errorf("excusedUntil = %v, want %v", got.Sub(t0), tt.want.Sub(t0))
			}
		})
	}
	still := []freeze{{signalled: at(100), stopped: at(102)}}
	if got := excusedUntil(at(50), still, at(9000)); !got.Equal(at(9000)) {
		t.Errorf("excusedUntil while stopped = %v, want now", got.Sub(t0))
	}
}

// TestRecordTerms feeds answers to the checker and compares the terms.
func TestRecordTerms(t *testing.T) {
	c := &checker{}
	p := &participant{freezes: []freeze{{signalled: at(300), stopped: at(301), resumed: at(900)}}}
	for _, a := range []struct {
		sent, got int
		leader    bool
	}{
		{0, 1, false},
		{100, 101, true},
		{200, 201, true},
		{302, 905, true}, // sent while stopped: counts from the SIGCONT
		{906, 907, false},
		{1000, 1001, true},
	} {
		c.record(p, at(a.sent), at(a.got), a.leader)
	}
	want := []term{
		{firstFrom: at(100), firstTo: at(101), lastFrom: at(900), lastTo: at(905), endTo: at(907)},
		{firstFrom: at(1000), firstTo: at(1001), lastFrom: at(1000), lastTo: at(1001)},
	}
	if diff := cmp.Diff(want, p.allTerms(), cmp.AllowUnexported(term{})); diff != "" {
		t.Errorf("terms (-want +got):\n%s", diff)
	}
}
