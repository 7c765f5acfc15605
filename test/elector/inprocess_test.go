package elector

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// member is an elector run in the test process, with its HTTP server.
type member struct {
	id     string
	e      *election.Elector
	proxy  *proxy
	addr   string
	cancel context.CancelFunc
	// done is closed when Run has returned err.
	done chan struct{}
	err  error
	srv  *election.Server
	// shutdown ends srv once: Server.Shutdown may be called only once.
	shutdown sync.Once
}

// close ends the member's server.
func (m *member) close() {
	m.shutdown.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx)
	})
}

// run starts the member's Run; stop, or cancel, ends it.
func (m *member) run() {
	var ctx context.Context
	ctx, m.cancel = context.WithCancel(context.Background())
	go func() {
		m.err = m.e.Run(ctx)
		close(m.done)
	}()
}

// stop ends the member's Run (a leader releases the lock) and its server.
func (m *member) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case <-m.done:
		if m.err != nil {
			t.Errorf("Run of %s returned %v after its context ended, want nil", m.id, m.err)
		}
	case <-time.After(5*time.Second + loadSlack):
		t.Fatalf("Run of %s did not return after its context ended", m.id)
	}
	m.close()
}

// TestInProcess runs three electors in the test process against the real
// API server, each through its own connection, so the race detector sees the
// election loop, its watch of the lock and the HTTP server while they
// elect, serve GET / and /watch under load, lose the API server, and hand
// over. No two may ever lead at once.
func TestInProcess(t *testing.T) {
	ns := env.Namespace(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", serviceAccountKubeconfig(t, ns, false))
	if err != nil {
		t.Fatal(err)
	}
	api := apiHost(t)
	var members []*member
	for _, id := range []string{"a", "b", "c"} {
		m := &member{id: id, proxy: newProxy(t, api), done: make(chan struct{})}
		cfg := *restCfg
		cfg.Host = "https://" + m.proxy.addr
		clients, err := election.NewClients(&cfg, std.renew)
		if err != nil {
			t.Fatal(err)
		}
		metrics := election.NewMetrics()
		m.e, err = election.New(election.Config{
			Election: electionName, Namespace: ns, ID: id, LockType: election.LockLeases,
			TTL: std.ttl, RenewDeadline: std.renew, RetryPeriod: std.retry,
		}, clients, logr.Discard(), metrics)
		if err != nil {
			t.Fatal(err)
		}
		l, err := election.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m.addr = l.Addr().String()
		m.srv = election.NewServer(m.e, metrics)
		go func() { _ = m.srv.Serve(l) }()
		m.run()
		t.Cleanup(func() {
			m.cancel()
			<-m.done
			m.close()
		})
		members = append(members, m)
	}

	// The safety check, in memory: no two leaders in any round of reads.
	stop := make(chan struct{})
	var checks sync.WaitGroup
	var mu sync.Mutex
	var violations []string
	checks.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			var leaders []string
			for _, m := range members {
				if m.e.IsLeader() {
					leaders = append(leaders, m.id)
				}
			}
			if len(leaders) > 1 {
				mu.Lock()
				violations = append(violations, fmt.Sprintf("%v at %s", leaders, time.Now().Format(time.StampMilli)))
				mu.Unlock()
			}
		}
	})
	// Load on the HTTP servers while the election runs.
	for _, m := range members {
		checks.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if st, err := controlplane.ElectorStatus(context.Background(), httpClient, m.addr); err == nil && st.Node != m.id {
					mu.Lock()
					violations = append(violations, fmt.Sprintf("GET / on %s answered node %q", m.id, st.Node))
					mu.Unlock()
				}
			}
		})
	}
	defer func() {
		close(stop)
		checks.Wait()
		if len(violations) > 0 {
			t.Errorf("%d violations, first: %s", len(violations), violations[0])
		}
	}()

	leader := waitMember(t, settle, members...)
	var followers []*member
	for _, m := range members {
		if m != leader {
			followers = append(followers, m)
		}
	}

	// The leader loses the API server: it steps down within its renew
	// deadline, and another takes over once the lease runs out.
	cut := time.Now()
	leader.proxy.cut()
	next := waitMember(t, settle, followers...)
	if took := time.Since(cut); took < std.gap() {
		t.Errorf("%s took over %s after the leader was cut off, sooner than ttl - renew deadline", next.id, took)
	}
	leader.proxy.restore(t)
	if got := waitMember(t, settle, members...); got != next {
		t.Errorf("leader once the old one is back = %s, want %s", got.id, next.id)
	}

	// A graceful stop hands over, as a /watch stream on another member
	// shows.
	var rest []*member
	for _, m := range members {
		if m != next {
			rest = append(rest, m)
		}
	}
	events := watchStream(t, rest[0].addr)
	next.stop(t)
	last := waitMember(t, settle, rest...)
	want := fmt.Sprintf(`"leader":%q`, last.id)
	deadline := time.After(std.ttl + loadSlack)
	for seen := false; !seen; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("/watch stream ended")
			}
			seen = strings.Contains(ev, want)
		case <-deadline:
			t.Fatalf("/watch on %s never named %s the leader", rest[0].id, last.id)
		}
	}
}

// waitMember waits until exactly one of ms leads and every one names it.
func waitMember(t *testing.T, timeout time.Duration, ms ...*member) *member {
	t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader *member
		n := 0
		names := map[string]bool{}
		for _, m := range ms {
			st := m.e.Status()
			names[st.Leader] = true
			if st.IsLeader {
				leader, n = m, n+1
			}
		}
		if n == 1 && len(names) == 1 && names[leader.id] {
			return leader
		}
		last = fmt.Sprintf("%d leaders, names %v", n, names)
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no single agreed leader within %s: %s", timeout, last)
	return nil
}

// watchStream reads GET /watch on addr and sends each event's data.
func watchStream(t *testing.T, addr string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 100)
	go func() {
		defer resp.Body.Close()
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && json.Valid([]byte(data)) {
				select {
				case events <- data:
				default:
				}
			}
		}
	}()
	return events
}
