package main

import (
	"runtime/debug"
	"testing"
)

// TestSetGCPercent checks that the elector collects at gcPercent by default
// and leaves a GOGC from the environment in force.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(name string) (string, bool) {
			v, ok := vars[name]
			return v, ok
		}
	}
	current := func() int {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}

	setGCPercent(env(nil))
	if got := current(); got != gcPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	// The runtime reads $GOGC at start; a value set then stays in force.
	debug.SetGCPercent(200)
	setGCPercent(env(map[string]string{"GOGC": "200"}))
	if got := current(); got != 200 {
		t.Errorf("GOGC=200: GC percent %d, want 200", got)
	}
}
