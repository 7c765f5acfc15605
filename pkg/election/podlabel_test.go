package election

import (
	"testing"

	"github.com/go-logr/logr"
)

func TestPodLabelerKeepOnly(t *testing.T) {
	p := newPodLabeler(nil, "ns", "role", logr.Discard(), NewMetrics())
	p.set("old-leader", standby)
	p.set("me", leader)
	p.keepOnly("me")
	if len(p.pending) != 1 || p.pending["me"] != leader {
		t.Errorf("pending = %v, want only me=leader", p.pending)
	}
	p.set("me", standby)
	if p.pending["me"] != standby {
		t.Errorf("a later value must replace an unwritten one: %v", p.pending)
	}
}
