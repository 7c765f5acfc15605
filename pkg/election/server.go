package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxWatchers bounds the open GET /watch streams, so the endpoint cannot be
// used to exhaust the process.
const maxWatchers = 128

// watchHeartbeat is how often an idle /watch stream gets a comment line; it
// keeps proxies from closing the stream and finds dead clients.
const watchHeartbeat = 15 * time.Second

// Server is the elector's HTTP API.
type Server struct {
	elector  *Elector
	metrics  *Metrics
	watchers atomic.Int32
	server   *http.Server
	// lastStatus is the last GET / answer encoded; concurrent requests
	// that find it stale may each encode and store one, all valid.
	lastStatus atomic.Pointer[document]
	// done ends the /watch streams on shutdown, which http.Server.Shutdown
	// does not do by itself; it is closed once, however often Shutdown is
	// called.
	done      chan struct{}
	closeDone sync.Once
}

// NewServer serves the elector's state and its metrics.
func NewServer(e *Elector, metrics *Metrics) *Server {
	s := &Server{elector: e, metrics: metrics, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(PathStatus, s.status)
	mux.HandleFunc(PathLeader, s.leader)
	mux.HandleFunc(PathHealthz, s.healthz)
	mux.HandleFunc(PathReadyz, s.readyz)
	mux.HandleFunc(PathMetrics, s.serveMetrics)
	mux.HandleFunc(PathWatch, s.watch)
	s.server = &http.Server{
		Handler:           onlyGET(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// /watch lifts this for its own stream.
		WriteTimeout:   10 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 8 << 10,
	}
	return s
}

// Listen opens addr (host:port) for the API. It is separate from Serve so a
// bad address is reported before the elector joins the election.
func Listen(addr string) (net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%q is not a host:port address (example: :4040 or 0.0.0.0:4040): %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %q: %w", addr, err)
	}
	return l, nil
}

// Serve answers on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if err := s.server.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown ends the /watch streams and waits for other requests to finish,
// until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeDone.Do(func() { close(s.done) })
	return s.server.Shutdown(ctx)
}

// onlyGET answers 405 to every method but GET and HEAD.
func onlyGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// document is an encoded GET / answer and what it was encoded from. The
// answer changes once a second (the timestamp) or when the election does,
// so requests in between write the same bytes: no encoding, no allocation.
type document struct {
	view   view
	second int64 // Unix time of the timestamp
	body   []byte
}

// jsonContentType is shared by every answer, so setting it allocates
// nothing.
var jsonContentType = []string{"application/json"}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != PathStatus {
		http.NotFound(w, r)
		return
	}
	now := time.Now()
	// Judged on every request, never cached: leadership may end at any
	// instant (see Status).
	v := s.elector.viewAt(now)
	doc := s.lastStatus.Load()
	if doc == nil || doc.view != v || doc.second != now.Unix() {
		body, err := json.Marshal(v.status(s.elector.cfg.ID, now))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		doc = &document{view: v, second: now.Unix(), body: append(body, '\n')}
		s.lastStatus.Store(doc)
	}
	w.Header()["Content-Type"] = jsonContentType
	_, _ = w.Write(doc.body)
}

// leader answers 200 only on the leader: a readiness probe for Services
// that must send to the leader alone.
func (s *Server) leader(w http.ResponseWriter, _ *http.Request) {
	st := s.elector.Status()
	code := http.StatusOK
	if !st.IsLeader {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set(HeaderEpoch, strconv.FormatUint(st.Epoch, 10))
	writeJSON(w, code, st)
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = s.metrics.WriteTo(w)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.elector.Ready() {
		writeText(w, http.StatusServiceUnavailable, "the election loop is not running")
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// watch streams the status document as server-sent events: once at once,
// then on every change of is_leader, leader or epoch.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	if s.watchers.Add(1) > maxWatchers {
		s.watchers.Add(-1)
		writeText(w, http.StatusServiceUnavailable, "too many watchers")
		return
	}
	defer s.watchers.Add(-1)
	rc := http.NewResponseController(w)
	// A stream outlives the server's write timeout; each write gets its own.
	_ = rc.SetWriteDeadline(time.Time{})

	changes, cancel := s.elector.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)

	heartbeat := time.NewTicker(watchHeartbeat)
	defer heartbeat.Stop()
	var last Status
	first := true
	for {
		st := s.elector.Status()
		if first || st.IsLeader != last.IsLeader || st.Leader != last.Leader || st.Epoch != last.Epoch {
			first, last = false, st
			body, _ := json.Marshal(st)
			if !s.send(rc, w, "data: %s\n\n", body) {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-changes:
		case <-heartbeat.C:
			// Also catches a lease that ran out with no event to say so.
			if !s.send(rc, w, ": heartbeat\n\n") {
				return
			}
		}
	}
}

func (s *Server) send(rc *http.ResponseController, w http.ResponseWriter, format string, args ...any) bool {
	_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(w, format, args...); err != nil {
		return false
	}
	return rc.Flush() == nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func writeText(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text + "\n"))
}
