package elector

// In-process faults for -leader-service, where the test holds or slows the
// elector's own requests (see leaderservice_faults_test.go).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// interceptor holds the requests match picks while it is on: it keeps
// them, and fails the caller only when the caller gives up; send delivers
// them later, as a network that delayed them would.
type interceptor struct {
	base  http.RoundTripper
	match func(*http.Request) bool

	mu   sync.Mutex
	on   bool
	held []*http.Request
	// hang, when set, makes a matched request wait for the caller to give
	// up and then fail, without delivering it.
	hang bool
	hung int
}

func (ic *interceptor) RoundTrip(r *http.Request) (*http.Response, error) {
	ic.mu.Lock()
	on, hang := ic.on, ic.hang
	ic.mu.Unlock()
	if !on || !ic.match(r) {
		return ic.base.RoundTrip(r)
	}
	if hang {
		ic.mu.Lock()
		ic.hung++
		ic.mu.Unlock()
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	late := r.Clone(context.Background())
	late.Body = io.NopCloser(bytes.NewReader(body))
	late.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	ic.mu.Lock()
	ic.held = append(ic.held, late)
	ic.mu.Unlock()
	<-r.Context().Done()
	return nil, r.Context().Err()
}

func (ic *interceptor) set(on bool) {
	ic.mu.Lock()
	ic.on = on
	ic.mu.Unlock()
}

func (ic *interceptor) count() (held, hung int) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return len(ic.held), ic.hung
}

// send delivers the held requests now, in order, and returns their answers.
func (ic *interceptor) send() []string {
	ic.mu.Lock()
	held := ic.held
	ic.held, ic.on = nil, false
	ic.mu.Unlock()
	var out []string
	for _, r := range held {
		resp, err := ic.base.RoundTrip(r)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%s %s: %d %.120s", r.Method, r.URL.Path, resp.StatusCode, b))
	}
	return out
}

// logBuf is a logger's output, safe to read while it is written.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		fmt.Fprintf(&l.b, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
		l.mu.Unlock()
	}, funcr.Options{})
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRoutedMember runs an elector in this process with -leader-service,
// its requests through ic when ic is not nil.
func startRoutedMember(t *testing.T, ns, id, ip string, ic *interceptor, edit func(*election.Config)) (*member, *logBuf) {
	t.Helper()
	restCfg, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if ic != nil {
		restCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			ic.base = rt
			return ic
		}
	}
	clients, err := election.NewClients(restCfg, std.renew)
	if err != nil {
		t.Fatal(err)
	}
	cfg := election.Config{
		Election: electionName, Namespace: ns, ID: id, LockType: election.LockLeases,
		TTL: std.ttl, RenewDeadline: std.renew, RetryPeriod: std.retry,
		LeaderService: leaderServiceName, PodName: "pod-" + id, PodIP: ip,
	}
	if edit != nil {
		edit(&cfg)
	}
	logs := &logBuf{}
	m := &member{id: id, done: make(chan struct{})}
	m.e, err = election.New(cfg, clients, logs.logger(), election.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	m.run()
	t.Cleanup(func() {
		m.cancel()
		<-m.done
		if t.Failed() {
			t.Logf("logs of %s:\n%s", id, logs)
		}
	})
	return m, logs
}

// TestLeaderServiceLateCreate checks "the previous holder's in-flight write may
// land after the lock changed hands, but never after the new holder's own
// listing". A write over an existing slice is a compare-and-swap, but one
// that makes a missing slice (POST) has no precondition: a's create, sent
// while it led and the slice was missing, that the network delivers late,
// lands whenever the slice is missing again, even after b listed itself;
// so a missing slice is made empty, and listed by an update.
func TestLeaderServiceLateCreate(t *testing.T) {
	ns, routes := routedNamespace(t)
	ipOf := map[string]string{"a": "10.4.0.1", "b": "10.4.0.2"}
	ic := &interceptor{match: func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/endpointslices")
	}}
	a, _ := startRoutedMember(t, ns, "a", ipOf["a"], ic, nil)
	if waitMember(t, settle, a) != a {
		t.Fatal("a does not lead")
	}
	waitListed(t, routes, ipOf["a"])
	b, _ := startRoutedMember(t, ns, "b", ipOf["b"], nil, nil)

	// a's resync finds the slice deleted and makes it again: the create
	// is held in the network.
	ic.set(true)
	endpointSlices := env.Client.DiscoveryV1().EndpointSlices(ns)
	if err := endpointSlices.Delete(ctxFor(t, apiTimeout), leaderServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*std.ttl+loadSlack, func() error {
		if held, _ := ic.count(); held == 0 {
			return fmt.Errorf("a has sent no create yet")
		}
		return nil
	})
	// a hands over (a clean shutdown: the slice does not list it).
	a.cancel()
	<-a.done
	if waitMember(t, settle, b) != b {
		t.Fatal("b does not lead")
	}
	waitListed(t, routes, ipOf["b"])

	// The slice is deleted again (an admin, the garbage collector), and a's
	// create arrives.
	if err := endpointSlices.Delete(ctxFor(t, apiTimeout), leaderServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, answer := range ic.send() {
		t.Logf("a's late create: %s", answer)
	}
	time.Sleep(std.ttl + 2*time.Second)
	routes.Close()
	r := routes.Check(ipOf)
	for _, v := range r.Violations {
		t.Error(v)
	}
}

// TestLeaderServiceReleaseOutrunsASlowRead checks the release's budget
// (releaseTimeout, 750 ms) and "a leader whose application fails releases
// the lock to a healthy follower": a background resync whose read of the
// Service hangs must not hold the withdrawal before the release past its
// deadline (it is given up for the withdrawal).
func TestLeaderServiceReleaseOutrunsASlowRead(t *testing.T) {
	ns, routes := routedNamespace(t)
	ipOf := map[string]string{"a": "10.5.0.1", "b": "10.5.0.2"}
	// A slow answer to the leader's resync read of its Service.
	ic := &interceptor{hang: true, match: func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/services/"+leaderServiceName)
	}}
	app := newFakeApp(t, true)
	health := func(c *election.Config) {
		c.AppHealthURL, c.AppHealthPeriod, c.AppHealthThreshold = app.srv.URL+"/healthz", appHealthPeriod, appHealthThreshold
	}
	a, logs := startRoutedMember(t, ns, "a", ipOf["a"], ic, health)
	if waitMember(t, settle, a) != a {
		t.Fatal("a does not lead")
	}
	waitListed(t, routes, ipOf["a"])
	_, _ = startRoutedMember(t, ns, "b", ipOf["b"], nil, nil)

	ic.set(true)
	eventually(t, 2*std.ttl+loadSlack, func() error {
		if _, hung := ic.count(); hung == 0 {
			return fmt.Errorf("a's resync has not read the Service yet")
		}
		return nil
	})
	unhealthy := time.Now()
	app.healthy.Store(false)
	// The lock's holder, as the API server has it.
	var handedOver time.Duration
	eventually(t, 3*std.ttl+loadSlack, func() error {
		l, err := env.Client.CoordinationV1().Leases(ns).Get(ctxFor(t, apiTimeout), electionName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "a" {
			return fmt.Errorf("a still holds the lock")
		}
		handedOver = time.Since(unhealthy)
		return nil
	})
	// Detection takes appHealthThreshold probes; the release then has
	// 750 ms.
	budget := appHealthPeriod*appHealthThreshold + appHealthPeriod + 750*time.Millisecond + time.Second
	if handedOver > budget {
		var why string
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "releas") || strings.Contains(line, "unhealthy") {
				why += "\n" + line
			}
		}
		t.Errorf("a, unhealthy, handed the lock over %s after, want within %s (release, not expiry):%s", handedOver.Round(time.Millisecond), budget, why)
	}
}
