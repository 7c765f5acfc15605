package election

import (
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

func TestPodLabelerOrder(t *testing.T) {
	p := newPodLabeler(nil, "ns", "role", logr.Discard(), NewMetrics())
	p.set("me", standby)
	p.set("old-leader", standby)
	p.set("me", leader)
	// The previous leader's demotion goes first; the later value for "me"
	// replaces the unwritten one and goes after it.
	want := []podLabel{{"old-leader", standby}, {"me", leader}}
	if diff := cmp.Diff(want, p.pending, cmp.AllowUnexported(podLabel{})); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	p.keepOnly("me")
	want = []podLabel{{"me", leader}}
	if diff := cmp.Diff(want, p.pending, cmp.AllowUnexported(podLabel{})); diff != "" {
		t.Errorf("after keepOnly (-want +got):\n%s", diff)
	}
}
