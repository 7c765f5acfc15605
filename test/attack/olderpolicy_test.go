package attack

import (
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestElectionUnderAnOlderLockPolicy: an elector of this release under the
// lock policy of a release from before the epoch and successor annotations
// (the sidecar image upgraded before config/default) still elects and
// hands over, pod labels and all. The policy refuses its first write that
// adds the epoch; it writes the lock without it from then on, and says so.
func TestElectionUnderAnOlderLockPolicy(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	vaps := env.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies()
	cur, err := vaps.Get(ctx, "k8s-elector-lock", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shipped := cur.Spec.DeepCopy()
	older := false
	for i, v := range cur.Spec.Variables {
		if v.Name == "record" {
			cur.Spec.Variables[i].Expression = "['control-plane.alpha.kubernetes.io/leader', 'elector.vapor.io/holder-pod']"
			older = true
		}
	}
	if !older {
		t.Fatal("the shipped lock policy has no variable record to make older")
	}
	if _, err := vaps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := ctxFor(t, 10*time.Second)
		cur, err := vaps.Get(ctx, "k8s-elector-lock", metav1.GetOptions{})
		if err == nil {
			cur.Spec = *shipped
			_, err = vaps.Update(ctx, cur, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Errorf("restore the shipped lock policy: %v", err)
		}
	})
	// The API server serves the changed policy once its watch brings it.
	time.Sleep(2 * time.Second)

	a := newApp(t)
	a.account("older")
	sidecars := electAndHandOver(t, a, "older", "older", nil)
	told := false
	for _, s := range sidecars {
		log, _ := os.ReadFile(s.log)
		told = told || strings.Contains(string(log), "refuses the epoch annotation "+election.AnnotationEpoch)
	}
	if !told {
		t.Errorf("no elector said the lock policy refuses the epoch annotation: the older policy was not in force, and the test proved nothing")
	}
}
