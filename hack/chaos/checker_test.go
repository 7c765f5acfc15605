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

// TestViolations checks the two rules across the members of an election:
// no overlap, and ttl - renew deadline between leaders unless the first
// released the lock.
func TestViolations(t *testing.T) {
	// ttl 3s, renew deadline 1.5s: the gap is 1.5s.
	spec := electionSpec{name: "e", ttl: 3 * time.Second}
	member := func(id string, released time.Time, terms ...term) *participant {
		return &participant{id: id, released: released, terms: terms}
	}
	type result struct {
		A, B    string
		Overlap bool
	}
	for _, tt := range []struct {
		name    string
		members []*participant
		want    []result
	}{
		{
			name:    "a gap's worth apart",
			members: []*participant{member("a", time.Time{}, span(0, 1, 1000, 1001)), member("b", time.Time{}, span(2500, 2501, 4000, 4001))},
		},
		{
			name:    "too soon after a crash",
			members: []*participant{member("a", time.Time{}, span(0, 1, 1000, 1001)), member("b", time.Time{}, span(2400, 2401, 4000, 4001))},
			want:    []result{{"a", "b", false}},
		},
		{
			name:    "at once after a release",
			members: []*participant{member("a", at(1001), span(0, 1, 1000, 1001)), member("b", time.Time{}, span(1010, 1011, 4000, 4001))},
		},
		{
			name: "a release covers only the last term",
			members: []*participant{
				member("a", at(9000), span(0, 1, 1000, 1001), span(5000, 5001, 6000, 6001)),
				member("b", time.Time{}, span(1010, 1011, 2000, 2001)),
			},
			want: []result{{"a", "b", false}},
		},
		{
			name:    "overlap",
			members: []*participant{member("a", time.Time{}, span(0, 1, 1000, 1001)), member("b", time.Time{}, span(500, 501, 4000, 4001))},
			want:    []result{{"a", "b", true}},
		},
		{
			name: "a resumed leader's first answer inside its successor's term",
			members: []*participant{
				member("a", time.Time{}, span(0, 1, 1000, 1001), term{firstFrom: at(9000), firstTo: at(9002), lastFrom: at(9000), lastTo: at(9002), probe: true}),
				member("b", time.Time{}, span(5000, 5001, 12000, 12001)),
			},
			want: []result{{"a", "b", true}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := &electionState{electionSpec: spec, members: tt.members}
			var got []result
			for _, v := range violations(es) {
				got = append(got, result{v.a, v.b, v.overlap})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}
