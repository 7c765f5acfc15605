package elector

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

const electionName = "test"

// electionArgs are the flags every participant of a test's election gets.
func electionArgs(ns string, tm timing, extra ...string) []string {
	return append(append([]string{"-election=" + electionName, "-namespace=" + ns}, tm.args()...), extra...)
}

// TestElection runs three participants on each lock type, each with the
// narrowest Role for its lock: they elect one leader and agree on it; the
// leader's SIGTERM hands over (exit 0) before its lease could have run out;
// the next leader's SIGKILL fails over no sooner than its lease allows and
// within ttl + retry period.
func TestElection(t *testing.T) {
	for _, lock := range election.LockTypes {
		t.Run(string(lock), func(t *testing.T) {
			ns := env.Namespace(t)
			var kubeconfig string
			if lock == election.LockLeases {
				// The default lock runs with exactly the shipped Role.
				kubeconfig = serviceAccountKubeconfig(t, ns, false)
			} else {
				kubeconfig = accountWithRules(t, ns, electionRules(lock, electionName, true, false))
			}
			args := electionArgs(ns, std, "-lock-type="+string(lock))
			w := newWatcher(t, std.gap())
			ps := []*participant{
				w.start("a", kubeconfig, args...),
				w.start("b", kubeconfig, args...),
				w.start("c", kubeconfig, args...),
			}

			first := w.waitLeader(settle, ps...)
			waitEvent(t, ns, first.id+" became leader")
			termed, err := first.stop(t, syscall.SIGTERM)
			if err != nil {
				t.Errorf("leader %s exited with %v after SIGTERM, want status 0", first.id, err)
			}
			if !strings.Contains(first.Logs(), "released the lock") {
				t.Errorf("leader %s did not release the lock:\n%s", first.id, first.Logs())
			}
			// Had the release been ignored, the others would wait out the
			// lease they last saw renewed, at least ttl - retry period from
			// the SIGTERM.
			second := w.waitLeader(settle, ps...)
			w.tookOver(termed, std.ttl-std.retry, ps...)

			rec := readLock(t, lock, ns)
			killed, err := second.stop(t, syscall.SIGKILL)
			if err == nil {
				t.Fatalf("SIGKILL: process exited cleanly?")
			}
			third := w.waitLeader(settle, ps...)
			if third == second {
				t.Fatalf("the killed leader still leads")
			}
			took, _ := w.firstTrue(third, killed)
			t.Logf("failover: %s led %s after %s was killed, %s after its last renewal", third.id,
				took.from.Sub(killed).Round(time.Millisecond), second.id, took.from.Sub(rec.RenewTime.Time).Round(time.Millisecond))
			// The others time the lease from when they saw the killed
			// leader's last renewal, which was written at or after the
			// renewTime read before the kill.
			if earliest := rec.RenewTime.Add(std.ttl); took.to.Before(earliest) {
				t.Errorf("%s took over at %s, before the lease renewed at %s could run out (%s)", third.id, took.to.Format(time.StampMilli), rec.RenewTime.Format(time.StampMilli), earliest.Format(time.StampMilli))
			}
			if d := took.from.Sub(killed); d > std.ttl+std.retry+loadSlack {
				t.Errorf("failover took %s, want within ttl + retry period (%s) with slack", d, std.ttl+std.retry)
			}
		})
	}
}

// TestAPIServerOutage cuts the participants off the API server: the leader
// must stop calling itself leader within the renew deadline, nobody may lead
// during the outage, every participant stays ready (an outage must not make
// the app's pod NotReady), the leader counts the failed renewals, and once
// the API server is back there is a leader again.
func TestAPIServerOutage(t *testing.T) {
	ns := env.Namespace(t)
	api, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, api.Host)
	kubeconfig := viaProxy(t, serviceAccountKubeconfig(t, ns, false), p)
	args := electionArgs(ns, std)
	w := newWatcher(t, std.gap())
	ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...), w.start("c", kubeconfig, args...)}
	leader := w.waitLeader(settle, ps...)

	// Taken once the cut is done: no renewal sent later can succeed.
	p.cut()
	cut := time.Now()
	stopReady := checkReady(t, ps)
	outage(w, cut, leader, ps, std)
	stopReady()
	p.restore(t)
	w.waitLeader(settle, ps...)
	if v := leader.metric(t, `elector_api_errors_total{operation="renew"}`); v == "" || v == "0" {
		t.Errorf(`elector_api_errors_total{operation="renew"} on %s after an outage = %q, want > 0`, leader.id, v)
	}
}

// checkReady polls /readyz on every participant until the returned function
// is called, and fails the test on any answer but 200 from one that should
// run.
func checkReady(t *testing.T, ps []*participant) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if p.mayEnd(time.Now()) {
					return
				}
				code, body, err := p.get("/readyz")
				if p.mayEnd(time.Now()) {
					return
				}
				if err != nil || code != http.StatusOK {
					t.Errorf("/readyz on %s = %d %q, %v; want 200 while the election runs", p.id, code, strings.TrimSpace(body), err)
					return
				}
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// TestAPIServerHung freezes the real kube-apiserver process (SIGSTOP):
// connections stay open and requests hang instead of failing. The leader
// must still step down in time, and nobody may lead until it is resumed.
func TestAPIServerHung(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, false)
	args := electionArgs(ns, std)
	w := newWatcher(t, std.gap())
	ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...), w.start("c", kubeconfig, args...)}
	leader := w.waitLeader(settle, ps...)

	resume := freezeAPIServer(t)
	cut := time.Now()
	outage(w, cut, leader, ps, std)
	resume()
	w.waitLeader(settle, ps...)
}

// freezeAPIServer stops the kube-apiserver process (SIGSTOP): its
// connections stay open and requests hang. It returns the function that
// resumes it, which also runs when the test ends.
func freezeAPIServer(t *testing.T) (resume func()) {
	t.Helper()
	pids := controlplane.Processes(env.Env.ControlPlane.APIServer.CertDir)
	if len(pids) != 1 {
		t.Fatalf("kube-apiserver processes: %v, want one", pids)
	}
	apiserver, err := os.FindProcess(pids[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := apiserver.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = apiserver.Signal(syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// outage checks what must hold while no participant can reach the API
// server, from cut (taken once it cannot): the leader says it does not lead to every request sent
// a renew deadline after the cut (its last renewal was sent before it), and
// until past ttl + retry period nobody leads.
func outage(w *watcher, cut time.Time, leader *participant, ps []*participant, tm timing) {
	t := w.t
	t.Helper()
	stepDown := cut.Add(tm.renew)
	eventually(t, tm.renew+loadSlack, func() error {
		if s, ok := w.latest(leader, stepDown); !ok || s.leader {
			return errNotYet("leader " + leader.id + " has not said it stopped leading")
		}
		return nil
	})
	for _, s := range w.samplesOf(leader) {
		if s.leader && !s.from.Before(stepDown) {
			t.Errorf("leader %s said is_leader=true at %s, more than the renew deadline (%s) after the API server went away", leader.id, s.from.Format(time.StampMilli), tm.renew)
		}
	}
	if rest := time.Until(cut.Add(tm.ttl + tm.retry)); rest > 0 {
		time.Sleep(rest)
	}
	for _, p := range ps {
		if s, ok := w.firstTrue(p, stepDown); ok {
			t.Errorf("%s led at %s, during the outage", p.id, s.to.Format(time.StampMilli))
		}
	}
}

type errNotYet string

func (e errNotYet) Error() string { return string(e) }

// TestFrozenLeader stops the leader's process (SIGSTOP) past its TTL, lets
// another take over, and resumes it: its answer to a request sent while it
// was stopped must say it does not lead, with an epoch not above the new
// leader's.
func TestFrozenLeader(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, false)
	args := electionArgs(ns, std)
	w := newWatcher(t, std.gap())
	ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...), w.start("c", kubeconfig, args...)}
	frozen := w.waitLeader(settle, ps...)

	stopped := w.freeze(frozen)
	next := w.waitLeader(settle, ps...)
	if next == frozen {
		t.Fatal("the frozen leader leads")
	}
	resumed := frozen.thaw(t)
	// The watcher sends a request as soon as the process is stopped
	// (watcher.freeze). Answers are recorded as they come, so a request
	// sent after the resume may be answered first: wait for one sent while
	// the process was stopped.
	var first sample
	eventually(t, loadSlack, func() error {
		for _, s := range w.samplesOf(frozen) {
			if !s.sent.Before(stopped) && s.sent.Before(resumed) {
				first = s
				return nil
			}
		}
		return errNotYet("no answer to a request sent while " + frozen.id + " was stopped")
	})
	if first.leader {
		t.Errorf("first answer of the resumed process: is_leader true while %s leads", next.id)
	}
	// Its epoch, from that first answer, is not above the new leader's
	// (its own term's, or the new one's if its watch brought that first):
	// a store fenced by epochs already refuses its writes.
	var nextEpoch uint64
	for _, s := range w.samplesOf(next) {
		if s.leader {
			nextEpoch = s.epoch
			break
		}
	}
	if first.epoch == 0 || first.epoch > nextEpoch {
		t.Errorf("first answer of the resumed process: epoch %d; want one above 0 and not above %s's %d", first.epoch, next.id, nextEpoch)
	}
	// It rejoins as a follower and agrees on the new leader.
	if got := w.waitLeader(settle, ps...); got != next {
		t.Errorf("leader after resume = %s, want %s", got.id, next.id)
	}
}

// TestUpstreamRecord starts an elector on a ConfigMap whose lock was written
// by an older client in the annotation format: it waits out the lease it
// finds, timed from when it first saw it, takes the lock as a new
// transition, and releases it in the same format.
func TestUpstreamRecord(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, time.Minute)
	now := time.Now().UTC().Format(time.RFC3339)
	old := `{"holderIdentity":"old-elector","leaseDurationSeconds":4,"acquireTime":"` + now + `","renewTime":"` + now + `","leaderTransitions":3}`
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: electionName, Namespace: ns,
		Annotations: map[string]string{election.LeaderAnnotation: old, "keep": "me"},
	}}
	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, std.gap())
	p := w.start("new", adminKubeconfig, electionArgs(ns, std, "-lock-type=configmaps")...)
	checkWaitsOut(w, p, "old-elector", 4*time.Second)
	rec := readLock(t, election.LockConfigMaps, ns)
	if rec.HolderIdentity != "new" || rec.LeaderTransitions != 4 || rec.LeaseDurationSeconds != 4 {
		t.Errorf("record after takeover = %+v, want holder new, transitions 4, duration 4", rec)
	}

	if _, err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	rec = readLock(t, election.LockConfigMaps, ns)
	if rec.HolderIdentity != "" || rec.LeaseDurationSeconds != 1 || rec.LeaderTransitions != 4 {
		t.Errorf("record after release = %+v, want no holder, duration 1, transitions 4", rec)
	}
	got, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, electionName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Annotations["keep"] != "me" {
		t.Errorf("the elector dropped another annotation: %v", got.Annotations)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(got.Annotations[election.LeaderAnnotation]), &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaderTransitions"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("released record has no %s: %v", k, fields)
		}
	}
	if ts, _ := fields["renewTime"].(string); !strings.HasSuffix(ts, "Z") || strings.Contains(ts, ".") {
		t.Errorf("renewTime %q is not RFC3339 in whole seconds", ts)
	}
}

// checkWaitsOut checks that p, alone in an election whose lock holder (not
// a participant) never renews, reports holder as leader, does not lead
// until lease after it can first have seen the record, and then leads
// within lease + retry period (with slack) of when it had seen it.
func checkWaitsOut(w *watcher, p *participant, holder string, lease time.Duration) {
	t := w.t
	t.Helper()
	// A generous wait: the bounds are checked below, from the answers.
	w.waitLeader(settle, p)
	// The elector saw the record no earlier than it started, and no earlier
	// than its last answer that named no leader.
	seen := p.started
	for _, s := range w.samplesOf(p) {
		if s.name == holder {
			break
		}
		if s.name == "" && s.from.After(seen) {
			seen = s.from
		}
	}
	// And it had seen it by its first answer that named the holder.
	var named sample
	for _, s := range w.samplesOf(p) {
		if s.name == holder {
			named = s
			break
		}
	}
	if named.to.IsZero() {
		t.Fatalf("%s never reported %s as the leader", p.id, holder)
	}
	took, _ := w.firstTrue(p, p.started)
	if d := took.to.Sub(seen); d < lease {
		t.Errorf("%s took the lock %s after it can first have seen %s's lease, before the lease of %s ran out", p.id, d.Round(time.Millisecond), holder, lease)
	}
	if d := took.from.Sub(named.to); d > lease+std.retry+loadSlack {
		t.Errorf("%s took the lock %s after it had seen %s's lease, want within the lease %s + retry period (with slack)", p.id, d.Round(time.Millisecond), holder, lease)
	}
}

// TestForeignRecord starts an elector on a lock whose holder is not a
// participant and whose renewTime is hours old, or an hour ahead: another
// machine's clock says nothing about when the lease ends, so the elector
// waits the lease duration from when it first saw the record, no less and
// no more.
func TestForeignRecord(t *testing.T) {
	for _, tt := range []struct {
		name  string
		lock  election.LockType
		renew time.Duration
	}{
		{"lease-hours-old", election.LockLeases, -3 * time.Hour},
		{"lease-in-the-future", election.LockLeases, time.Hour},
		{"configmap-hours-old", election.LockConfigMaps, -3 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			renewed := time.Now().Add(tt.renew).UTC().Truncate(time.Second)
			writeLock(t, tt.lock, ns, election.Record{
				HolderIdentity:       "other",
				LeaseDurationSeconds: 4,
				AcquireTime:          metav1.NewTime(renewed.Add(-time.Minute)),
				RenewTime:            metav1.NewTime(renewed),
				LeaderTransitions:    2,
			})
			w := newWatcher(t, std.gap())
			p := w.start("p", adminKubeconfig, electionArgs(ns, std, "-lock-type="+string(tt.lock))...)
			checkWaitsOut(w, p, "other", 4*time.Second)
		})
	}
}

// writeLock creates the lock object of type lock holding rec.
func writeLock(t *testing.T, lock election.LockType, ns string, rec election.Record) {
	t.Helper()
	ctx := ctxFor(t, apiTimeout)
	var err error
	switch lock {
	case election.LockLeases:
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: electionName, Namespace: ns}, Spec: leaseSpec(rec)}
		_, err = env.Client.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{})
	case election.LockConfigMaps:
		b, _ := json.Marshal(rec)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: electionName, Namespace: ns, Annotations: map[string]string{election.LeaderAnnotation: string(b)}}}
		_, err = env.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
	default:
		t.Fatalf("writeLock: %s not supported", lock)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func leaseSpec(rec election.Record) coordinationv1.LeaseSpec {
	holder, duration, transitions := rec.HolderIdentity, int32(rec.LeaseDurationSeconds), int32(rec.LeaderTransitions)
	return coordinationv1.LeaseSpec{
		HolderIdentity:       &holder,
		LeaseDurationSeconds: &duration,
		LeaseTransitions:     &transitions,
		AcquireTime:          &metav1.MicroTime{Time: rec.AcquireTime.Time},
		RenewTime:            &metav1.MicroTime{Time: rec.RenewTime.Time},
	}
}

// readLock reads the election record of the lock object as the API server
// stores it.
func readLock(t *testing.T, lock election.LockType, ns string) election.Record {
	t.Helper()
	ctx := ctxFor(t, apiTimeout)
	var annotations map[string]string
	switch lock {
	case election.LockLeases:
		l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, electionName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var rec election.Record
		if s := l.Spec; s.HolderIdentity != nil {
			rec.HolderIdentity = *s.HolderIdentity
		}
		if s := l.Spec; s.LeaseDurationSeconds != nil {
			rec.LeaseDurationSeconds = int(*s.LeaseDurationSeconds)
		}
		if s := l.Spec; s.LeaseTransitions != nil {
			rec.LeaderTransitions = int(*s.LeaseTransitions)
		}
		if s := l.Spec; s.AcquireTime != nil {
			rec.AcquireTime = metav1.NewTime(s.AcquireTime.Time)
		}
		if s := l.Spec; s.RenewTime != nil {
			rec.RenewTime = metav1.NewTime(s.RenewTime.Time)
		}
		return rec
	case election.LockConfigMaps:
		cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, electionName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		annotations = cm.Annotations
	case election.LockEndpoints:
		ep, err := env.Client.CoreV1().Endpoints(ns).Get(ctx, electionName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		annotations = ep.Annotations
	}
	var rec election.Record
	if err := json.Unmarshal([]byte(annotations[election.LeaderAnnotation]), &rec); err != nil {
		t.Fatalf("annotation %s: %v", election.LeaderAnnotation, err)
	}
	return rec
}

// waitEvent waits for an Event on the lock object with message.
func waitEvent(t *testing.T, ns, message string) {
	t.Helper()
	waitEventMatch(t, ns, message, func(e corev1.Event) bool { return e.Reason == "LeaderElection" && e.Message == message })
}

// waitEventPrefix waits for an Event on the lock object whose message starts
// with prefix.
func waitEventPrefix(t *testing.T, ns, prefix string) {
	t.Helper()
	waitEventMatch(t, ns, prefix+"...", func(e corev1.Event) bool {
		return e.Reason == "LeaderElection" && strings.HasPrefix(e.Message, prefix)
	})
}

// waitEventMatch waits for an Event on the lock object that match accepts;
// want describes it.
func waitEventMatch(t *testing.T, ns, want string, match func(corev1.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(settle)
	var seen []string
	for time.Now().Before(deadline) {
		events, err := env.Client.CoreV1().Events(ns).List(ctxFor(t, apiTimeout), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, e := range events.Items {
			if e.InvolvedObject.Name == electionName && match(e) {
				return
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no Event %q on the lock in %s; events: %q", want, ns, seen)
}

// TestSecondSignal checks that a second SIGTERM ends the process at once,
// even while its release of the lock hangs on a frozen API server.
func TestSecondSignal(t *testing.T) {
	ns := env.Namespace(t)
	w := newWatcher(t, std.gap())
	p := w.start("a", adminKubeconfig, electionArgs(ns, std)...)
	w.waitLeader(settle, p)

	defer freezeAPIServer(t)()

	p.signal(t, syscall.SIGTERM)
	// The second signal goes as soon as the process says it is shutting
	// down, well inside its release timeout.
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(p.Logs(), "shutting down") {
			return errNotYet("no shutdown logged")
		}
		return nil
	})
	if _, err := p.stop(t, syscall.SIGTERM); err == nil {
		t.Errorf("exit status 0, want non-zero: the second signal ends the process before its release finishes")
	}
	for _, line := range []string{"released the lock", "could not release the lock"} {
		if strings.Contains(p.Logs(), line) {
			t.Errorf("the release finished (%q) before the second signal ended the process:\n%s", line, p.Logs())
		}
	}
}
