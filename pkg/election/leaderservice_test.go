package election

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testService(ports ...string) *coreService {
	var svc coreService
	svc.Name, svc.UID = "leader", "uid-1"
	for _, p := range ports {
		var port servicePort
		if err := json.Unmarshal([]byte(p), &port); err != nil {
			panic(err)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, port)
	}
	return &svc
}

func TestSlicePorts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		svc     *coreService
		want    []slicePort
		wantErr string
	}{{
		name: "target port number",
		svc:  testService(`{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}`),
		want: []slicePort{{Name: "http", Port: 8080, Protocol: "TCP"}},
	}, {
		name: "no target port: the port, TCP",
		svc:  testService(`{"name":"grpc","port":9090,"appProtocol":"grpc"}`, `{"name":"dns","port":53,"protocol":"UDP"}`),
		want: []slicePort{{Name: "grpc", Port: 9090, Protocol: "TCP", AppProtocol: "grpc"}, {Name: "dns", Port: 53, Protocol: "UDP"}},
	}, {
		name:    "named target port",
		svc:     testService(`{"name":"http","port":80,"targetPort":"web"}`),
		wantErr: `service leader: port "http" has the targetPort "web", a name, which a Service without a selector cannot resolve: give the number`,
	}, {
		name:    "no ports",
		svc:     testService(),
		wantErr: "service leader has no ports: add the port the application serves on",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := slicePorts(tc.svc)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("slicePorts: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := mustJSON(t, got), mustJSON(t, tc.want); g != w {
				t.Errorf("slicePorts:\n got %s\nwant %s", g, w)
			}
		})
	}
}

// TestFillSlice: the slice lists the pod alone, with the Service's ports,
// the labels that tie it to the Service and keep the controllers off it,
// the epoch, and the Service as it is now as its owner, and no other
// metadata (the webhook refuses any); the fields it does not know stay.
func TestFillSlice(t *testing.T) {
	s := &leaderService{namespace: "ns", name: "leader", pod: "pod-a", ip: "fd00::7"}
	slice := endpointSlice{rawObject{
		ObjectMeta: metav1.ObjectMeta{Name: "leader", Labels: map[string]string{"team": "x"}, Annotations: map[string]string{AnnotationEpoch: "3", "note": "by hand"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "leader", UID: "uid-0"}}},
		fields: map[string]json.RawMessage{"endpoints": json.RawMessage(`[{"addresses":["fd00::1"],"conditions":{}},{"addresses":["fd00::2"],"conditions":{}}]`), "future": json.RawMessage(`1`)},
	}}
	svc := testService(`{"name":"http","port":80}`)
	ports, err := slicePorts(svc)
	if err != nil {
		t.Fatal(err)
	}
	if !s.lists(&endpointSlice{rawObject{fields: map[string]json.RawMessage{"endpoints": json.RawMessage(`[{"addresses":["fd00::7"],"targetRef":{"kind":"Pod","name":"pod-a"}}]`)}}}) {
		t.Errorf("lists: false for a slice listing the pod")
	}
	if s.lists(&endpointSlice{rawObject{fields: map[string]json.RawMessage{"endpoints": json.RawMessage(`[{"addresses":["fd00::7"],"targetRef":{"kind":"Pod","name":"pod-b"}}]`)}}}) {
		t.Errorf("lists: true for a slice listing another pod with the same IP (a pod on the node's network)")
	}
	if s.lists(&slice) {
		t.Errorf("lists: true for a slice listing two other addresses")
	}
	if err := s.fill(&slice, svc, ports, 7); err != nil {
		t.Fatal(err)
	}
	got := mustJSON(t, slice)
	for _, want := range []string{
		`"addressType":"IPv6"`,
		`"endpoints":[{"addresses":["fd00::7"],"conditions":{"ready":true,"serving":true,"terminating":false},"targetRef":{"kind":"Pod","namespace":"ns","name":"pod-a"}}]`,
		`"ports":[{"name":"http","protocol":"TCP","port":80}]`,
		`"future":1`,
		`"labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io","kubernetes.io/service-name":"leader"}`,
		`"annotations":{"elector.vapor.io/epoch":"7"}`,
		`"ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"leader","uid":"uid-1"}]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("filled slice lacks %s:\n%s", want, got)
		}
	}
	if !s.lists(&slice) || sliceEpoch(&slice) != 7 || len(portsOf(&slice)) != 1 {
		t.Errorf("the filled slice reads back as listing %v, epoch %d, ports %v", s.lists(&slice), sliceEpoch(&slice), portsOf(&slice))
	}

	fresh := endpointSlice{rawObject{ObjectMeta: metav1.ObjectMeta{Name: "leader"}, fields: map[string]json.RawMessage{}}}
	s.ip = "10.0.0.7"
	if err := s.fill(&fresh, svc, ports, 0); err != nil {
		t.Fatal(err)
	}
	got = mustJSON(t, fresh)
	for _, want := range []string{`"addressType":"IPv4"`, `"ownerReferences":[{"apiVersion":"v1","kind":"Service","name":"leader","uid":"uid-1"}]`} {
		if !strings.Contains(got, want) {
			t.Errorf("a new slice lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, AnnotationEpoch) {
		t.Errorf("a slice written without an epoch carries one:\n%s", got)
	}
}

func TestValidateLeaderService(t *testing.T) {
	base := Config{Election: "e", Namespace: "ns", ID: "a", LockType: LockLeases, TTL: DefaultTTL, LeaderService: "leader", PodName: "pod-a", PodIP: "10.0.0.1"}
	base.RenewDeadline, base.RetryPeriod = DefaultTimings(base.TTL)
	if err := base.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"not a Service name", func(c *Config) { c.LeaderService = "Leader.svc" }, `-leader-service: "Leader.svc" is not a Service name`},
		{"no pod name", func(c *Config) { c.PodName = "" }, "-leader-service: needs the pod's name: set -pod-name or $POD_NAME"},
		{"no pod IP", func(c *Config) { c.PodIP = "" }, "-pod-ip: is required by -leader-service: set $POD_IP from the downward API (status.podIP)"},
		{"bad pod IP", func(c *Config) { c.PodIP = "10.0.0" }, `-pod-ip: "10.0.0" is not an IP address`},
		{"loopback", func(c *Config) { c.PodIP = "127.0.0.1" }, `-pod-ip: "127.0.0.1" is a loopback, link-local, multicast or unspecified address`},
		{"link-local", func(c *Config) { c.PodIP = "169.254.1.1" }, `is a loopback, link-local`},
		{"unspecified", func(c *Config) { c.PodIP = "::" }, `is a loopback, link-local`},
		{"multicast", func(c *Config) { c.PodIP = "224.0.0.1" }, `is a loopback, link-local`},
		{"IPv4-mapped", func(c *Config) { c.PodIP = "::ffff:10.0.0.1" }, `"::ffff:10.0.0.1" is an IPv4-mapped IPv6 address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sliceServer serves one EndpointSlice and one Service, and records the
// writes of the slice.
type sliceServer struct {
	mu        sync.Mutex
	slice     string // JSON; "" for none
	conflicts int    // PUTs to refuse with a conflict first
	writes    []string
}

func (s *sliceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/services/leader"):
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Service","metadata":{"name":"leader","uid":"svc-uid"},"spec":{"ports":[{"name":"http","port":80}]}}`)
	case r.Method == http.MethodGet && s.slice != "":
		fmt.Fprint(w, s.slice)
	case r.Method == http.MethodGet:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
	case s.conflicts > 0:
		s.conflicts--
		s.slice = strings.Replace(s.slice, `"resourceVersion":"1"`, `"resourceVersion":"2"`, 1)
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409}`)
	default:
		body, _ := io.ReadAll(r.Body)
		s.writes = append(s.writes, r.Method+" "+string(body))
		s.slice = string(body)
		_, _ = w.Write(body)
	}
}

// TestLeaderServiceSync: the slice is written only by a participant that
// leads when its reads are answered, never over a newer term's, with the
// version it read; a withdrawal empties it only when it lists this pod.
func TestLeaderServiceSync(t *testing.T) {
	const listedOther = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"},"annotations":{"elector.vapor.io/epoch":"5"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.2"]}]}`
	const listedSelf = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"targetRef":{"kind":"Pod","name":"pod-a"}}]}`
	const listedSelfAndOther = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"targetRef":{"kind":"Pod","name":"pod-a"}},{"addresses":["10.0.0.9"]}]}`
	const samePodIPOtherPod = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"targetRef":{"kind":"Pod","name":"pod-b"}}]}`
	const ipv6 = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"}},"addressType":"IPv6","endpoints":[]}`
	const someoneElses = `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"team.example.com"}},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}]}`
	for _, tc := range []struct {
		name      string
		slice     string
		want      bool
		leads     []bool // answers of leads(), in turn; the last repeats
		epoch     uint64
		conflicts int
		writes    []string // substrings of each write, in order
		wantErr   string
		// again syncs a second time, which must write nothing more.
		again bool
	}{
		{name: "someone else's slice", slice: someoneElses, want: true, leads: []bool{true}, epoch: 6,
			wantErr: `EndpointSlice leader is not the elector's (its label endpointslice.kubernetes.io/managed-by is "team.example.com", not "elector.vapor.io"): delete it, or name another Service with -leader-service`},
		{name: "someone else's slice, withdrawing", slice: someoneElses, leads: []bool{false}},
		{name: "not leading", slice: listedOther, want: true, leads: []bool{false}, epoch: 6},
		{name: "stops leading before the write", slice: listedOther, want: true, leads: []bool{true, false}, epoch: 6},
		{name: "a higher epoch on the slice (a bad one, written by hand) does not keep the leader out", slice: listedOther, want: true, leads: []bool{true}, epoch: 4,
			writes: []string{`"endpoints":[{"addresses":["10.0.0.1"]`}},
		{name: "listed beside another address: written over", slice: listedSelfAndOther, want: true, leads: []bool{true}, epoch: 6, again: true,
			writes: []string{`"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true,"serving":true,"terminating":false},"targetRef":{"kind":"Pod","namespace":"ns","name":"pod-a"}}],`}},
		{name: "another address family", slice: ipv6, want: true, leads: []bool{true}, epoch: 6,
			wantErr: "EndpointSlice leader holds IPv6 addresses, and this pod's IP 10.0.0.1 is IPv4, which its addressType, fixed at creation, cannot change to: delete the slice"},
		{name: "withdraw: its IP, another pod's", slice: samePodIPOtherPod, leads: []bool{false}},
		{name: "leading", slice: listedOther, want: true, leads: []bool{true}, epoch: 6, again: true,
			writes: []string{`PUT {"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[{"addresses":["10.0.0.1"]`}},
		{name: "read again after a conflict", slice: listedOther, want: true, leads: []bool{true}, epoch: 6, conflicts: 1,
			writes: []string{`"resourceVersion":"2"`}},
		{name: "no slice yet: made empty, then written over", want: true, leads: []bool{true}, epoch: 6, again: true,
			writes: []string{`POST {"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[],`, `PUT {"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[{"addresses":["10.0.0.1"]`}},
		{name: "withdraw another's", slice: listedOther, leads: []bool{true}},
		{name: "withdraw its own, dropping what was added by hand", slice: strings.Replace(listedSelf, `"labels":{`, `"labels":{"team":"x",`, 1), leads: []bool{false},
			writes: []string{`"labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io","kubernetes.io/service-name":"leader"}`}},
		{name: "withdraw its own", slice: listedSelf, leads: []bool{false},
			writes: []string{`PUT {"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[],`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &sliceServer{slice: tc.slice, conflicts: tc.conflicts}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			clients, err := NewClients(&rest.Config{Host: hs.URL}, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			leads := func() (bool, uint64) {
				i := min(calls, len(tc.leads)-1)
				calls++
				return tc.leads[i], tc.epoch
			}
			s := newLeaderService(clients, Config{Namespace: "ns", LeaderService: "leader", PodName: "pod-a", PodIP: "10.0.0.1", TTL: time.Minute}, leads, logr.Discard(), NewMetrics())
			s.set(tc.want)
			err = s.sync(context.Background())
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("sync: %v, want %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			}
			if tc.again {
				if err := s.sync(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if len(srv.writes) != len(tc.writes) {
				t.Fatalf("writes:\n%s\nwant %d", strings.Join(srv.writes, "\n"), len(tc.writes))
			}
			for i, w := range tc.writes {
				if !strings.Contains(srv.writes[i], w) {
					t.Errorf("write %d:\n%s\nwant it to contain %s", i, srv.writes[i], w)
				}
			}
		})
	}
}

// FuzzLeaderServiceSlice: whatever slice the API server holds (anyone with
// update on it may have written it), the elector reads it without
// panicking, and its write lists this pod alone.
func FuzzLeaderServiceSlice(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"leader","annotations":{"elector.vapor.io/epoch":"5"}},"endpoints":[{"addresses":["10.0.0.2"]}],"ports":[{"name":"http","port":80}]}`))
	f.Add([]byte(`{"metadata":{"name":"leader"},"endpoints":null,"ports":"x"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"metadata":{"annotations":{"elector.vapor.io/epoch":"-1"},"ownerReferences":[{}]},"endpoints":[{"addresses":[1]}]}`))
	svc := testService(`{"name":"http","port":80}`)
	ports, err := slicePorts(svc)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var slice endpointSlice
		if json.Unmarshal(data, &slice) != nil {
			return
		}
		s := &leaderService{namespace: "ns", name: "leader", pod: "pod-a", ip: "10.0.0.1"}
		_, _, _ = s.lists(&slice), sliceEpoch(&slice), portsOf(&slice)
		if err := s.fill(&slice, svc, ports, 9); err != nil {
			t.Fatal(err)
		}
		var eps []sliceEndpoint
		if err := json.Unmarshal(slice.fields["endpoints"], &eps); err != nil || len(eps) != 1 || len(eps[0].Addresses) != 1 || !s.lists(&slice) || sliceEpoch(&slice) != 9 {
			t.Fatalf("filled slice lists %v (%v), epoch %d", eps, err, sliceEpoch(&slice))
		}
		if _, err := json.Marshal(slice); err != nil {
			t.Fatalf("filled slice does not encode: %v", err)
		}
	})
}

// portsOf is the ports slice lists, nil if unreadable.
func portsOf(slice *endpointSlice) []slicePort {
	var ports []slicePort
	_ = json.Unmarshal(slice.fields["ports"], &ports)
	return ports
}

// sliceEpoch is the epoch written on slice, 0 for none.
func sliceEpoch(slice *endpointSlice) uint64 {
	n, _ := strconv.ParseUint(slice.Annotations[AnnotationEpoch], 10, 64)
	return n
}

// TestLeaderServiceReadsTheServiceOnce: a write from a Service read for it
// reads it no second time; one from the Service read before (prefetch, a
// term ago) reads it again after, to catch a change meanwhile.
func TestLeaderServiceReadsTheServiceOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prefetch bool
		want     int32
	}{{"read for the write", false, 1}, {"read before", true, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &sliceServer{slice: `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"leader","resourceVersion":"1","labels":{"endpointslice.kubernetes.io/managed-by":"elector.vapor.io"}},"addressType":"IPv4","endpoints":[]}`}
			var serviceGets atomic.Int32
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/services/leader") {
					serviceGets.Add(1)
				}
				srv.ServeHTTP(w, r)
			}))
			defer hs.Close()
			clients, err := NewClients(&rest.Config{Host: hs.URL}, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			s := newLeaderService(clients, Config{Namespace: "ns", LeaderService: "leader", PodName: "pod-a", PodIP: "10.0.0.1", TTL: time.Minute},
				func() (bool, uint64) { return true, 6 }, logr.Discard(), NewMetrics())
			if tc.prefetch {
				s.prefetch(context.Background())
			}
			s.set(true)
			if err := s.sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(srv.writes) != 1 {
				t.Fatalf("writes %v, want 1", srv.writes)
			}
			if n := serviceGets.Load(); n != tc.want {
				t.Errorf("the Service was read %d times, want %d", n, tc.want)
			}
		})
	}
}
