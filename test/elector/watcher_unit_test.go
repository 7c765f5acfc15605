package elector

import (
	"testing"
	"time"
)

// TestWatcherVerdicts checks the watcher's judgement on made-up answers, so
// that what it passes in the process tests is known to be what it would
// fail if it happened.
func TestWatcherVerdicts(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// answers turns "ms:leader" pairs into samples 1 ms long.
	answers := func(pairs ...any) []sample {
		var out []sample
		for i := 0; i < len(pairs); i += 2 {
			ms, leader := pairs[i].(int), pairs[i+1].(bool)
			out = append(out, sample{sent: at(ms), from: at(ms), to: at(ms + 1), leader: leader})
		}
		return out
	}
	const gap = 1000 * time.Millisecond
	for _, tt := range []struct {
		name     string
		a, b     []sample
		released int // when a was sent SIGTERM, in ms; 0 for never
		want     int // violations
	}{
		{"handover after the gap", answers(0, true, 10, true, 20, false), answers(0, false, 1100, true), 0, 0},
		{"handover before the gap", answers(0, true, 10, true, 20, false), answers(0, false, 900, true), 0, 1},
		{"both at once", answers(0, true, 10, true, 20, true), answers(0, false, 10, true), 0, 1},
		{"released, taken at once", answers(0, true, 10, true, 20, false), answers(0, false, 30, true), 15, 0},
		{"released, but taken before the release", answers(0, true, 10, true, 20, false), answers(0, false, 12, true), 15, 1},
		{"old leader took its own lock back, then a new one waited the gap after that",
			answers(0, true, 10, false, 500, true, 600, false), answers(0, false, 1700, true), 0, 0},
		{"old leader took its own lock back, and a new one did not wait",
			answers(0, true, 10, false, 500, true, 600, false), answers(0, false, 1200, true), 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := &participant{id: "a"}, &participant{id: "b"}
			if tt.released > 0 {
				a.released = at(tt.released)
			}
			w := &watcher{gap: gap, ps: []*participant{a, b}, samples: map[*participant][]sample{a: tt.a, b: tt.b}}
			if got := w.violations(); len(got) != tt.want {
				t.Errorf("%d violations, want %d: %q", len(got), tt.want, got)
			}
		})
	}

	t.Run("a stopped process judged by its answer after it resumed", func(t *testing.T) {
		a := &participant{id: "a", freezes: []freeze{{stopped: at(100), resumed: at(3000)}}}
		b := &participant{id: "b"}
		// a's request sent at 200 ms, while it was stopped, is answered
		// after it resumed: true then is two leaders.
		late := sample{sent: at(200), from: a.answeredFrom(at(200), at(3001)), to: at(3001), leader: true}
		if !late.from.Equal(at(3000)) {
			t.Fatalf("answer to a request sent while stopped is dated from %v, want the resume", late.from.Sub(t0))
		}
		w := &watcher{gap: gap, ps: []*participant{a, b}, samples: map[*participant][]sample{
			a: append(answers(0, true, 50, true), late),
			b: answers(0, false, 1500, true, 3000, true, 3100, true),
		}}
		if got := w.violations(); len(got) == 0 {
			t.Errorf("no violation for a resumed process saying it leads while another does")
		}
	})

	t.Run("epochs", func(t *testing.T) {
		// epochs turns "ms:epoch" pairs into leader samples 1 ms long.
		epochs := func(pairs ...int) []sample {
			var out []sample
			for i := 0; i < len(pairs); i += 2 {
				out = append(out, sample{sent: at(pairs[i]), from: at(pairs[i]), to: at(pairs[i] + 1), leader: true, epoch: uint64(pairs[i+1])})
			}
			return out
		}
		for _, tt := range []struct {
			name string
			a, b []sample
			want int
		}{
			{"greater", epochs(0, 5, 10, 5), epochs(2000, 9), 0},
			{"equal", epochs(0, 5, 10, 5), epochs(2000, 5), 1},
			{"lower", epochs(0, 5, 10, 5), epochs(2000, 4), 1},
			{"changed within a term", epochs(0, 5, 10, 6), epochs(2000, 9), 1},
			{"none", epochs(0, 0), nil, 1},
		} {
			t.Run(tt.name, func(t *testing.T) {
				a, b := &participant{id: "a"}, &participant{id: "b"}
				w := &watcher{gap: gap, ps: []*participant{a, b}, samples: map[*participant][]sample{a: tt.a, b: tt.b}}
				if got := w.epochViolations(); len(got) != tt.want {
					t.Errorf("%d violations, want %d: %q", len(got), tt.want, got)
				}
			})
		}
	})
}
