package election

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// upstream is a record as client-go before v0.24 wrote it into the
// control-plane.alpha.kubernetes.io/leader annotation.
const upstream = `{"holderIdentity":"k8s-elector-74c54b485f-hgf9z","leaseDurationSeconds":10,"acquireTime":"2019-05-02T18:28:41Z","renewTime":"2019-05-02T18:28:51Z","leaderTransitions":2}`

func TestAnnotationFormat(t *testing.T) {
	rec, err := recordFromAnnotations(map[string]string{LeaderAnnotation: upstream})
	if err != nil {
		t.Fatal(err)
	}
	want := Record{
		HolderIdentity:       "k8s-elector-74c54b485f-hgf9z",
		LeaseDurationSeconds: 10,
		AcquireTime:          metav1.NewTime(time.Date(2019, 5, 2, 18, 28, 41, 0, time.UTC)),
		RenewTime:            metav1.NewTime(time.Date(2019, 5, 2, 18, 28, 51, 0, time.UTC)),
		LeaderTransitions:    2,
	}
	if !rec.equal(want) {
		t.Errorf("read %+v, want %+v", rec, want)
	}
	out, err := rec.annotation()
	if err != nil {
		t.Fatal(err)
	}
	if out != upstream {
		t.Errorf("written back:\n%s\nwant byte for byte:\n%s", out, upstream)
	}
}

func TestAnnotationErrors(t *testing.T) {
	if rec, err := recordFromAnnotations(nil); err != nil || rec.HolderIdentity != "" {
		t.Errorf("no annotation: %+v, %v; want a released record", rec, err)
	}
	_, err := recordFromAnnotations(map[string]string{LeaderAnnotation: "{"})
	if err == nil {
		t.Fatal("a broken annotation was accepted")
	}
	if want := "annotation " + LeaderAnnotation; !contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}

func TestLeaseRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	rec := Record{HolderIdentity: "a", LeaseDurationSeconds: 10, AcquireTime: metav1.NewTime(now), RenewTime: metav1.NewTime(now.Add(time.Second)), LeaderTransitions: 7}
	preferred := "b"
	spec := rec.leaseSpec(coordinationv1.LeaseSpec{PreferredHolder: &preferred})
	if spec.PreferredHolder == nil || *spec.PreferredHolder != "b" {
		t.Errorf("a field the record does not own was dropped: %+v", spec)
	}
	// Through JSON, as the API server stores it: MicroTime keeps
	// microseconds, and nothing else may be lost on the way.
	raw, err := json.Marshal(&coordinationv1.Lease{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	var decoded coordinationv1.Lease
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	got := recordFromLease(&decoded.Spec)
	if !got.RenewTime.Equal(&rec.RenewTime) {
		t.Errorf("renew time %s came back as %s", rec.RenewTime.Format(time.RFC3339Nano), got.RenewTime.Format(time.RFC3339Nano))
	}
	if diff := cmp.Diff(rec.annotationOrDie(t), got.annotationOrDie(t)); diff != "" || !got.equal(rec) {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func (r Record) annotationOrDie(t *testing.T) string {
	s, err := r.annotation()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNextRenewTime(t *testing.T) {
	last := time.Date(2026, 1, 2, 3, 4, 5, 900_000_000, time.UTC)
	tests := []struct {
		name       string
		now        time.Time
		sinceWrite time.Duration
		want       time.Time
		wantWait   time.Duration
	}{
		{"next second", last.Add(200 * time.Millisecond), 200 * time.Millisecond, last.Add(200 * time.Millisecond), 0},
		{"same second waits for the next", last.Add(-400 * time.Millisecond), 100 * time.Millisecond, time.Time{}, 500*time.Millisecond + 5*time.Millisecond},
		{"clock set back moves on by a second", last.Add(-time.Hour), 1200 * time.Millisecond, time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC), 0},
		{"clock set back looks again at the next second", last.Add(-time.Hour), 300 * time.Millisecond, time.Time{}, 100*time.Millisecond + 5*time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, wait := nextRenewTime(last, tt.now, tt.sinceWrite)
			if !got.Equal(tt.want) || wait != tt.wantWait {
				t.Errorf("nextRenewTime = %s, %s; want %s, %s", got, wait, tt.want, tt.wantWait)
			}
			if wait == 0 && got.Unix() <= last.Unix() {
				t.Errorf("renew time %s is not in a later second than %s", got, last)
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
