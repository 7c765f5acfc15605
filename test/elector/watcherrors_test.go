package elector

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// watchRequest is a watch an elector opened.
type watchRequest struct {
	at              time.Time
	resourceVersion string
}

// errorWatches is the API server as the elector sees it through a proxy
// that passes every request through, as cluster admin, except watches: it
// answers each with the lock as it is and then an error event.
type errorWatches struct {
	mu      sync.Mutex
	watches []watchRequest
}

func (e *errorWatches) requests() []watchRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]watchRequest(nil), e.watches...)
}

// serve starts the proxy and returns a kubeconfig that reaches the API
// server through it.
func (e *errorWatches) serve(t *testing.T, ns string) string {
	t.Helper()
	target, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := rest.TransportFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = transport
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("watch") != "true" && q.Get("watch") != "1" {
			r.Host = target.Host
			rp.ServeHTTP(w, r)
			return
		}
		e.mu.Lock()
		e.watches = append(e.watches, watchRequest{at: time.Now(), resourceVersion: q.Get("resourceVersion")})
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		enc := json.NewEncoder(w)
		if lease, err := env.Client.CoordinationV1().Leases(ns).Get(r.Context(), electionName, metav1.GetOptions{}); err == nil {
			lease.APIVersion, lease.Kind = "coordination.k8s.io/v1", "Lease"
			_ = enc.Encode(metav1.WatchEvent{Type: "ADDED", Object: rawJSON(lease)})
		}
		status := metav1.Status{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
			Status:   metav1.StatusFailure, Message: "injected by the test", Reason: metav1.StatusReasonInternalError, Code: 500,
		}
		_ = enc.Encode(metav1.WatchEvent{Type: "ERROR", Object: rawJSON(&status)})
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: srv.URL}
	cfg.AuthInfos["none"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "none"}
	cfg.CurrentContext = "proxy"
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tempFile(t, "watch-errors.kubeconfig", out)
}

func rawJSON(v any) runtime.RawExtension {
	b, _ := json.Marshal(v)
	return runtime.RawExtension{Raw: b}
}

// TestWatchErrors gives an elector a watch that ends every time with an
// error event. It must watch again from no resourceVersion (the version it
// had may be what the server refuses), back off (an error event is no sign
// of a healthy watch) up to its retry period, and still lead.
func TestWatchErrors(t *testing.T) {
	ns := env.Namespace(t)
	var proxy errorWatches
	kubeconfig := proxy.serve(t, ns)
	w := newWatcher(t, std.gap())
	p := w.start("a", kubeconfig, electionArgs(ns, std)...)
	w.waitLeader(settle, p)
	from := time.Now()
	const window = 5 * time.Second
	time.Sleep(window)
	var n int
	for _, r := range proxy.requests() {
		if !r.at.Before(from) {
			n++
		}
	}
	// Backing off 100ms, 200ms, 400ms and then the retry period, a window
	// holds at most a few more watches than window / retry period.
	if max := int(window/std.retry) + 4; n > max {
		t.Errorf("%d watches in %s after error events, want at most %d: the backoff was reset by error events", n, window, max)
	}
	for i, r := range proxy.requests() {
		if r.resourceVersion != "" {
			t.Errorf("watch %d, after an error event, from resourceVersion %q, want \"\" (the current state)", i, r.resourceVersion)
			break
		}
	}
	if len(proxy.requests()) < 2 {
		t.Errorf("the elector opened %d watches, want it to watch again after an error event", len(proxy.requests()))
	}
}
