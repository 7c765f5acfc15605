package election

import (
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEpochOf(t *testing.T) {
	rec := Record{HolderIdentity: "a", LeaderTransitions: 7}
	for _, tc := range []struct {
		name  string
		value string
		want  uint64
	}{
		{"this term's", "1234/7", 1234},
		{"another term's: a participant that writes no epoch took the lock", "1234/6", 0},
		{"none", "", 0},
		{"no transitions", "1234", 0},
		{"not a number", "x/7", 0},
		{"negative", "-1/7", 0},
		{"too big", "18446744073709551616/7", 0},
		{"largest", "18446744073709551615/7", 1<<64 - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			annotations := map[string]string{}
			if tc.value != "" {
				annotations[AnnotationEpoch] = tc.value
			}
			if got := epochOf(annotations, rec); got != tc.want {
				t.Errorf("epochOf(%q) = %d, want %d", tc.value, got, tc.want)
			}
		})
	}
}

// TestLockWritesEpoch: every lock type keeps the epoch beside the record,
// reads back what it wrote, and drops it for 0, leaving other annotations
// alone.
func TestLockWritesEpoch(t *testing.T) {
	rec := Record{HolderIdentity: "a", LeaseDurationSeconds: 10, LeaderTransitions: 3}
	for _, kind := range []lockKind{leaseKind, configMapKind, endpointsKind} {
		t.Run(kind.resource, func(t *testing.T) {
			l := &recordLock{namespace: "ns", name: "e", kind: kind}
			obj := kind.newObject()
			obj.SetAnnotations(map[string]string{"keep": "me"})
			if err := l.write(obj, rec, 42); err != nil {
				t.Fatal(err)
			}
			if got := obj.GetAnnotations()[AnnotationEpoch]; got != "42/3" {
				t.Errorf("%s = %q, want 42/3", AnnotationEpoch, got)
			}
			if got := l.observe(obj).epoch; got != 42 {
				t.Errorf("read back epoch %d, want 42", got)
			}
			if err := l.write(obj, rec, 0); err != nil {
				t.Fatal(err)
			}
			if _, ok := obj.GetAnnotations()[AnnotationEpoch]; ok || obj.GetAnnotations()["keep"] != "me" {
				t.Errorf("after writing epoch 0, annotations are %v; want only keep=me and the record", obj.GetAnnotations())
			}
		})
	}
}

func TestVersionEpoch(t *testing.T) {
	for rv, want := range map[string]uint64{"": 0, "17": 17, "abc": 0, "9007199254740993": 9007199254740993} {
		objs := []object{
			&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}},
		}
		for _, obj := range objs {
			if got := versionEpoch(obj); got != want {
				t.Errorf("versionEpoch(rv %q) = %d, want %d", rv, got, want)
			}
		}
	}
	if got := versionEpoch(nil); got != 0 {
		t.Errorf("versionEpoch(nil) = %d, want 0", got)
	}
}
