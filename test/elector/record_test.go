package elector

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestLeaseRoundTrip takes over, renews and releases a Lease that carries
// what the record does not own (labels, annotations, a preferred holder)
// and times at nanosecond precision, through the API server, which stores
// microseconds: what the elector writes and reads back must still be its
// own (it never takes its own renewals for another process's, and never
// stops leading), and everything it does not own is kept.
func TestLeaseRoundTrip(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, time.Minute)
	renewed := time.Now().Add(-time.Hour).Add(123456789 * time.Nanosecond)
	spec := leaseSpec(election.Record{HolderIdentity: "other", LeaseDurationSeconds: 2, AcquireTime: metav1.NewTime(renewed), RenewTime: metav1.NewTime(renewed), LeaderTransitions: 5})
	spec.PreferredHolder = new("b")
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: electionName, Namespace: ns, Labels: map[string]string{"keep": "label"}, Annotations: map[string]string{"keep": "annotation"}},
		Spec:       spec,
	}
	created, err := env.Client.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The API server keeps the preferred holder only with its feature gate.
	preferred := created.Spec.PreferredHolder != nil

	w := newWatcher(t, std.gap())
	p := w.start("a", adminKubeconfig, electionArgs(ns, std)...)
	w.waitLeader(settle, p)
	// Several renewals, each read back from the API server.
	before := metricValue(t, p, `elector_renew_duration_seconds_count{result="success"}`)
	eventually(t, 4*std.retry+loadSlack, func() error {
		if n := metricValue(t, p, `elector_renew_duration_seconds_count{result="success"}`); n < before+3 {
			return errNotYet("fewer than 3 renewals")
		}
		return nil
	})
	if s, ok := w.latest(p, time.Now()); ok && !s.leader {
		t.Errorf("stopped leading while renewing its own lease")
	}
	if v := p.metric(t, "elector_duplicate_id_total"); v != "" && v != "0" {
		t.Errorf("elector_duplicate_id_total = %s: the elector took its own renewals, read back at microseconds, for another process's", v)
	}
	check := func(when string, wantHolder string, wantTransitions int32) {
		t.Helper()
		got, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, electionName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels["keep"] != "label" || got.Annotations["keep"] != "annotation" {
			t.Errorf("%s: labels %v, annotations %v: the elector dropped what it does not own", when, got.Labels, got.Annotations)
		}
		if preferred && (got.Spec.PreferredHolder == nil || *got.Spec.PreferredHolder != "b") {
			t.Errorf("%s: preferredHolder = %s, want b", when, ptrString(got.Spec.PreferredHolder))
		}
		if h := ptrString(got.Spec.HolderIdentity); h != wantHolder {
			t.Errorf("%s: holder %s, want %q", when, h, wantHolder)
		}
		if tr := got.Spec.LeaseTransitions; tr == nil || *tr != wantTransitions {
			t.Errorf("%s: leaseTransitions %s, want %d", when, ptrString(tr), wantTransitions)
		}
	}
	check("leading", "a", 6)
	if _, err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	check("released", "", 6)
}

// TestAnnotationLockRoundTrip leads on, renews and releases a ConfigMap and
// an Endpoints object that hold what the elector does not own (data, binary
// data, subsets, labels, annotations): every byte of it is kept. The elector
// knows these objects by their metadata alone and writes the rest back as
// it read it, so this is what stands between an election and a user's data.
func TestAnnotationLockRoundTrip(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, time.Minute)
	meta := metav1.ObjectMeta{Name: electionName, Namespace: ns, Labels: map[string]string{"keep": "label"}, Annotations: map[string]string{"keep": "annotation"}}
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: meta,
		Data:       map[string]string{"config.yaml": "a: 1\nb: [2, 3]\n", "empty": ""},
		BinaryData: map[string][]byte{"blob": {0, 1, 2, 255}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the Endpoints lock exists for compatibility
	ep, err := env.Client.CoreV1().Endpoints(ns).Create(ctx, &corev1.Endpoints{
		ObjectMeta: meta,
		//lint:ignore SA1019 the Endpoints lock exists for compatibility
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.7", Hostname: "db-0"}},
			Ports:     []corev1.EndpointPort{{Name: "sql", Port: 5432, Protocol: corev1.ProtocolTCP}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	for _, lock := range []election.LockType{election.LockConfigMaps, election.LockEndpoints} {
		t.Run(string(lock), func(t *testing.T) {
			check := func(when string) {
				t.Helper()
				var diff string
				switch lock {
				case election.LockConfigMaps:
					got, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, electionName, metav1.GetOptions{})
					if err != nil {
						t.Fatal(err)
					}
					diff = cmp.Diff(cm.Data, got.Data) + cmp.Diff(cm.BinaryData, got.BinaryData) + keptMeta(got.ObjectMeta)
				case election.LockEndpoints:
					got, err := env.Client.CoreV1().Endpoints(ns).Get(ctx, electionName, metav1.GetOptions{})
					if err != nil {
						t.Fatal(err)
					}
					diff = cmp.Diff(ep.Subsets, got.Subsets) + keptMeta(got.ObjectMeta)
				}
				if diff != "" {
					t.Errorf("%s: the elector changed what it does not own (-created +now):\n%s", when, diff)
				}
			}
			w := newWatcher(t, std.gap())
			p := w.start("a", adminKubeconfig, electionArgs(ns, std, "-lock-type="+string(lock))...)
			w.waitLeader(settle, p)
			before := metricValue(t, p, `elector_renew_duration_seconds_count{result="success"}`)
			eventually(t, 4*std.retry+loadSlack, func() error {
				if n := metricValue(t, p, `elector_renew_duration_seconds_count{result="success"}`); n < before+2 {
					return errNotYet("fewer than 2 renewals")
				}
				return nil
			})
			check("leading")
			if _, err := p.stop(t, syscall.SIGTERM); err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
			check("released")
		})
	}
}

// keptMeta says how the labels and annotations of a lock object differ from
// those the test gave it, but for the elector's own annotations.
func keptMeta(got metav1.ObjectMeta) string {
	annotations := map[string]string{}
	for k, v := range got.Annotations {
		if !strings.HasPrefix(k, "control-plane.alpha.kubernetes.io/") && !strings.HasPrefix(k, "elector.vapor.io/") {
			annotations[k] = v
		}
	}
	return cmp.Diff(map[string]string{"keep": "label"}, got.Labels) + cmp.Diff(map[string]string{"keep": "annotation"}, annotations)
}
