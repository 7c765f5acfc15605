package elector

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/test/testenv"
)

// Test timings: a short TTL keeps the tests quick; the bounds asserted are
// derived from it, never wall-clock goals.
const (
	ttl         = 4 * time.Second
	renew       = ttl / 3
	retry       = ttl / 6
	electionArg = "-election=test"
)

var ttlArg = "-ttl=" + ttl.String()

// TestElection runs three participants on each lock type: they elect one
// leader and agree on it; the leader's SIGTERM hands over and exits 0 within
// a second; the next leader's SIGKILL fails over within ttl + retry period.
func TestElection(t *testing.T) {
	for _, lock := range election.LockTypes {
		t.Run(string(lock), func(t *testing.T) {
			ns := env.Namespace(t)
			kubeconfig := adminKubeconfig
			if lock == election.LockLeases {
				// The default lock runs with exactly the shipped Role.
				kubeconfig = serviceAccountKubeconfig(t, ns, false)
			}
			args := []string{electionArg, ttlArg, "-namespace=" + ns, "-lock-type=" + string(lock)}
			ps := []*participant{
				start(t, "a", kubeconfig, args...),
				start(t, "b", kubeconfig, args...),
				start(t, "c", kubeconfig, args...),
			}
			watch(t, ps...)

			first := waitLeader(t, 2*ttl, ps...)
			waitEvent(t, ns, first.id+" became leader")
			took, err := first.stop(t, syscall.SIGTERM)
			if err != nil {
				t.Errorf("leader %s exited with %v after SIGTERM, want status 0", first.id, err)
			}
			if took > time.Second {
				t.Errorf("leader %s took %s to exit after SIGTERM, want under 1s", first.id, took)
			}
			if !strings.Contains(first.Logs(), "released the lock") {
				t.Errorf("leader %s did not release the lock:\n%s", first.id, first.Logs())
			}
			// A released lock is taken at once, not after the TTL: the bound
			// here is well under one TTL.
			second := waitLeader(t, ttl/2, ps...)
			if second == first {
				t.Fatalf("the stopped leader still leads")
			}

			killed := time.Now()
			if _, err := second.stop(t, syscall.SIGKILL); err == nil {
				t.Fatalf("SIGKILL: process exited cleanly?")
			}
			third := waitLeader(t, ttl+retry+2*time.Second, ps...)
			if third == second {
				t.Fatalf("the killed leader still leads")
			}
			if since := time.Since(killed); since > ttl+retry+2*time.Second {
				t.Errorf("failover took %s, want within ttl + retry period (%s) with slack", since, ttl+retry)
			}
		})
	}
}

// TestAPIServerOutage cuts the participants off the API server: the leader
// must stop calling itself leader within the renew deadline plus a retry
// period, no one may claim to lead during the outage, and once the API
// server is back there is a leader again. The cut is a proxy closing every
// connection and refusing new ones: what a crashed API server looks like
// from the electors.
func TestAPIServerOutage(t *testing.T) {
	ns := env.Namespace(t)
	api, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, api.Host)
	kubeconfig := viaProxy(t, serviceAccountKubeconfig(t, ns, false), p)
	args := []string{electionArg, ttlArg, "-namespace=" + ns}
	ps := []*participant{start(t, "a", kubeconfig, args...), start(t, "b", kubeconfig, args...), start(t, "c", kubeconfig, args...)}
	watch(t, ps...)
	leader := waitLeader(t, 2*ttl, ps...)

	p.cut()
	outage(t, leader, ps)
	p.restore(t)
	waitLeader(t, 2*ttl, ps...)
}

// TestAPIServerHung freezes the real kube-apiserver process (SIGSTOP):
// connections stay open and requests hang instead of failing. The leader
// must still step down in time, and nobody may lead until it is resumed.
func TestAPIServerHung(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, false)
	args := []string{electionArg, ttlArg, "-namespace=" + ns}
	ps := []*participant{start(t, "a", kubeconfig, args...), start(t, "b", kubeconfig, args...), start(t, "c", kubeconfig, args...)}
	watch(t, ps...)
	leader := waitLeader(t, 2*ttl, ps...)

	resume := freezeAPIServer(t)
	outage(t, leader, ps)
	resume()
	waitLeader(t, 3*ttl, ps...)
}

// freezeAPIServer stops the kube-apiserver process (SIGSTOP): its
// connections stay open and requests hang. It returns the function that
// resumes it, which also runs when the test ends.
func freezeAPIServer(t *testing.T) (resume func()) {
	t.Helper()
	pids := testenv.Processes(env.Env.ControlPlane.APIServer.CertDir)
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
// server: the leader says so within the renew deadline plus a retry period,
// and until past the TTL nobody leads.
func outage(t *testing.T, leader *participant, ps []*participant) {
	t.Helper()
	cut := time.Now()
	bound := renew + retry + 500*time.Millisecond
	for {
		st, err := leader.status()
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsLeader {
			break
		}
		if time.Since(cut) > bound {
			t.Fatalf("leader %s still claims to lead %s after the API server went away (bound %s)", leader.id, time.Since(cut), bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for time.Since(cut) < ttl+retry {
		if err := noLeader(ps...); err != nil {
			t.Fatalf("during the outage: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFrozenLeader stops the leader's process (SIGSTOP) past its TTL, lets
// another take over, and resumes it: its very first answer must say it does
// not lead.
func TestFrozenLeader(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, false)
	args := []string{electionArg, ttlArg, "-namespace=" + ns}
	ps := []*participant{start(t, "a", kubeconfig, args...), start(t, "b", kubeconfig, args...), start(t, "c", kubeconfig, args...)}
	watch(t, ps...)
	frozen := waitLeader(t, 2*ttl, ps...)

	frozen.setPaused(true)
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	next := waitLeader(t, ttl+retry+2*time.Second, ps...)
	if next == frozen {
		t.Fatal("the frozen leader leads")
	}
	// The request is sent while the process is still stopped, so it is
	// waiting the moment the process resumes, before its loop has caught up.
	conn, err := net.Dial("tcp", frozen.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: elector\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var st election.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st.IsLeader {
		t.Errorf("first answer of the resumed process: is_leader true while %s leads", next.id)
	}
	frozen.setPaused(false)
	// It rejoins as a follower and agrees on the new leader.
	if got := waitLeader(t, 2*ttl, ps...); got != next {
		t.Errorf("leader after resume = %s, want %s", got.id, next.id)
	}
}

// TestUpstreamRecord starts an elector on a ConfigMap whose lock was written
// by an older client in the annotation format: it waits out the lease it
// finds, takes the lock as a new transition, and releases it in the same
// format.
func TestUpstreamRecord(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, time.Minute)
	now := time.Now().UTC().Format(time.RFC3339)
	old := `{"holderIdentity":"old-elector","leaseDurationSeconds":4,"acquireTime":"` + now + `","renewTime":"` + now + `","leaderTransitions":3}`
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: "test", Namespace: ns,
		Annotations: map[string]string{election.LeaderAnnotation: old, "keep": "me"},
	}}
	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	p := start(t, "new", adminKubeconfig, electionArg, ttlArg, "-namespace="+ns, "-lock-type=configmaps")
	watch(t, p)
	for {
		st, err := p.status()
		if err != nil {
			t.Fatal(err)
		}
		if st.IsLeader {
			t.Fatalf("took the lock at once over the old lease: %+v", st)
		}
		if st.Leader == "old-elector" {
			break
		}
		if time.Since(started) > 2*time.Second {
			t.Fatalf("does not report old-elector as leader: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitLeader(t, 2*ttl, p)
	if waited := time.Since(started); waited < 4*time.Second {
		t.Errorf("took the lock after %s, before the old lease of 4s ran out", waited)
	}
	rec := readRecord(t, ns)
	if rec.HolderIdentity != "new" || rec.LeaderTransitions != 4 || rec.LeaseDurationSeconds != 4 {
		t.Errorf("record after takeover = %+v, want holder new, transitions 4, duration 4", rec)
	}

	if _, err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	rec = readRecord(t, ns)
	if rec.HolderIdentity != "" || rec.LeaseDurationSeconds != 1 || rec.LeaderTransitions != 4 {
		t.Errorf("record after release = %+v, want no holder, duration 1, transitions 4", rec)
	}
	got, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctx, "test", metav1.GetOptions{})
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

func readRecord(t *testing.T, ns string) election.Record {
	t.Helper()
	cm, err := env.Client.CoreV1().ConfigMaps(ns).Get(ctxFor(t, 10*time.Second), "test", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rec election.Record
	if err := json.Unmarshal([]byte(cm.Annotations[election.LeaderAnnotation]), &rec); err != nil {
		t.Fatalf("annotation %s: %v", election.LeaderAnnotation, err)
	}
	return rec
}

// TestPodLabel runs participants that label their pods, with only the
// shipped Roles: the leader's pod is labelled leader and the others standby,
// and after a handover the labels follow.
func TestPodLabel(t *testing.T) {
	ns := env.Namespace(t)
	ctx := ctxFor(t, 2*time.Minute)
	kubeconfig := serviceAccountKubeconfig(t, ns, true)
	var ps []*participant
	for _, id := range []string{"pod-a", "pod-b", "pod-c"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: id, Namespace: ns, Labels: map[string]string{"app": "x"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, start(t, id, kubeconfig, electionArg, ttlArg, "-namespace="+ns, "-pod-label=role", "-pod-name="+id))
	}
	watch(t, ps...)
	leader := waitLeader(t, 2*ttl, ps...)
	waitLabels(t, ns, leader.id, ps)

	if _, err := leader.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	next := waitLeader(t, ttl, ps...)
	waitLabels(t, ns, next.id, ps)
}

// waitLabels waits until exactly leaderID's pod is labelled role=leader and
// every other standby, and no other label was lost.
func waitLabels(t *testing.T, ns, leaderID string, ps []*participant) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got map[string]string
	for time.Now().Before(deadline) {
		got = map[string]string{}
		ok := true
		for _, p := range ps {
			pod, err := env.Client.CoreV1().Pods(ns).Get(ctxFor(t, 5*time.Second), p.id, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got[p.id] = pod.Labels["role"]
			want := "standby"
			if p.id == leaderID {
				want = "leader"
			}
			if pod.Labels["role"] != want || pod.Labels["app"] != "x" {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pod labels = %v, want %s leader and the others standby", got, leaderID)
}

// TestLeastPrivilege proves the shipped Role is no wider than it needs to
// be where it matters: the elector's account cannot read Secrets.
func TestLeastPrivilege(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := serviceAccountKubeconfig(t, ns, true)
	cfg, err := clientcmdLoad(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cfg.CoreV1().Secrets(ns).List(ctxFor(t, 10*time.Second), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets with the elector's account: %v, want Forbidden", err)
	}
}

// waitEvent waits for an Event on the lock object "test" with message.
func waitEvent(t *testing.T, ns, message string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		events, err := env.Client.CoreV1().Events(ns).List(ctxFor(t, 5*time.Second), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == "test" && e.Reason == "LeaderElection" && e.Message == message {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no Event %q on the lock in %s", message, ns)
}

// TestRightsArriveLater starts electors whose service account has no rights
// yet, as when an injected pod starts before the injector has bound its
// Role: they are not ready and nobody leads; once the binding appears, they
// elect a leader without a restart.
func TestRightsArriveLater(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := unboundAccount(t, ns)
	args := []string{electionArg, ttlArg, "-namespace=" + ns}
	ps := []*participant{start(t, "a", kubeconfig, args...), start(t, "b", kubeconfig, args...)}
	watch(t, ps...)
	time.Sleep(2 * retry)
	if err := noLeader(ps...); err != nil {
		t.Fatalf("without rights: %v", err)
	}
	resp, err := httpClient.Get("http://" + ps[0].addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz without rights = %d, want 503", resp.StatusCode)
	}
	bindShippedRoles(t, ns, false)
	waitLeader(t, 2*ttl, ps...)
}

// TestSecondSignal checks that a second SIGTERM ends the process at once,
// even while its release of the lock hangs on a frozen API server.
func TestSecondSignal(t *testing.T) {
	ns := env.Namespace(t)
	p := start(t, "a", adminKubeconfig, electionArg, ttlArg, "-namespace="+ns)
	watch(t, p)
	waitLeader(t, 2*ttl, p)

	defer freezeAPIServer(t)()

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-p.done:
		t.Fatalf("exited before the second signal, while its release should hang: %v", p.exit)
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5s after the second signal")
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("exited %s after the first signal, want at once after the second (release timeout is 750ms)", took)
	}
	if p.exit == nil {
		t.Errorf("exit status 0 after an interrupted release, want non-zero")
	}
}
