package election

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
)

// simAPIServer is an in-memory API server that serves exactly what the
// elector uses, the way kube-apiserver does: leases, configmaps and
// endpoints by name with a compare-and-swap on resourceVersion, watches of
// one object by field selector, and Events and pod patches, which it
// accepts. Objects are kept as the JSON the server would store, so times
// have the server's precision (a Lease's MicroTime in microseconds; a
// ConfigMap's record is an annotation string, in the whole seconds the
// client wrote). resourceVersions are one counter for every write, like
// etcd's revision.
type simAPIServer struct {
	mu      sync.Mutex
	rv      int64
	objects map[string]*simObject // by simKey
	// history holds the last events of the lock objects, oldest first, for
	// watches from a resourceVersion; older ones are compacted away.
	history []simWatchEvent
	keep    int
	watches []*simWatch
	closed  bool
	// uids counts created objects, for their UIDs.
	uids int
	// wrote is called after every write of a lock object, with the server's
	// lock held released; the simulation traces it.
	wrote func(what string, rv int64, raw []byte)
}

// simKind is one resource the server stores.
type simKind struct {
	resource   string
	group      schema.GroupResource
	apiVersion string
	kind       string
	newObject  func() object
}

var simKinds = []simKind{
	{"leases", schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "coordination.k8s.io/v1", "Lease",
		func() object { return &coordinationv1.Lease{} }},
	{"configmaps", schema.GroupResource{Resource: "configmaps"}, "v1", "ConfigMap",
		func() object { return &corev1.ConfigMap{} }},
	{"endpoints", schema.GroupResource{Resource: "endpoints"}, "v1", "Endpoints",
		//lint:ignore SA1019 the Endpoints lock exists for compatibility
		func() object { return &corev1.Endpoints{} }},
}

func simKindOf(resource string) (simKind, bool) {
	for _, k := range simKinds {
		if k.resource == resource {
			return k, true
		}
	}
	return simKind{}, false
}

// simObject is one stored object: its JSON as the server would send it.
type simObject struct {
	kind    simKind
	rv      int64
	raw     []byte
	uid     types.UID
	created metav1.Time
}

// simWatchEvent is one change of a stored object.
type simWatchEvent struct {
	key string
	rv  int64
	raw []byte // the encoded watch event
}

func simKey(resource, namespace, name string) string {
	return resource + "/" + namespace + "/" + name
}

func newSimAPIServer(keep int) *simAPIServer {
	return &simAPIServer{objects: map[string]*simObject{}, keep: keep}
}

// simReply is the server's answer to one request: a body, or a watch.
type simReply struct {
	code  int
	body  []byte
	watch *simWatch
}

// serve answers one request. It never blocks: a watch is returned as a
// stream that the network delivers.
func (s *simAPIServer) serve(method string, u *url.URL, body []byte) simReply {
	resource, namespace, name, ok := simParsePath(u.Path)
	if !ok {
		return simStatus(apierrors.NewNotFound(schema.GroupResource{Resource: u.Path}, ""))
	}
	switch {
	case resource == "events" && method == http.MethodPost:
		s.mu.Lock()
		s.rv++
		s.mu.Unlock()
		return simReply{code: http.StatusCreated, body: body}
	case resource == "pods" && method == http.MethodPatch:
		s.mu.Lock()
		s.rv++
		rv := s.rv
		s.mu.Unlock()
		pod := corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, ResourceVersion: strconv.FormatInt(rv, 10)}}
		return simReply{code: http.StatusOK, body: simMustJSON(pod)}
	}
	kind, ok := simKindOf(resource)
	if !ok {
		return simStatus(apierrors.NewMethodNotSupported(schema.GroupResource{Resource: resource}, method))
	}
	q := u.Query()
	switch {
	case method == http.MethodGet && name == "" && q.Get("watch") == "true":
		return s.watch(kind, namespace, q)
	case method == http.MethodGet && name != "":
		return s.get(kind, namespace, name)
	case method == http.MethodPost && name == "":
		return s.create(kind, namespace, body)
	case method == http.MethodPut && name != "":
		return s.update(kind, namespace, name, body)
	}
	return simStatus(apierrors.NewMethodNotSupported(kind.group, method))
}

// simParsePath splits /api/v1/namespaces/NS/RESOURCE[/NAME] and
// /apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME].
func simParsePath(p string) (resource, namespace, name string, ok bool) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case len(parts) >= 5 && parts[0] == "api" && parts[2] == "namespaces":
		parts = parts[3:]
	case len(parts) >= 6 && parts[0] == "apis" && parts[3] == "namespaces":
		parts = parts[4:]
	default:
		return "", "", "", false
	}
	switch len(parts) {
	case 2:
		return parts[1], parts[0], "", true
	case 3:
		return parts[1], parts[0], parts[2], true
	}
	return "", "", "", false
}

func (s *simAPIServer) get(kind simKind, namespace, name string) simReply {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[simKey(kind.resource, namespace, name)]
	if o == nil {
		return simStatus(apierrors.NewNotFound(kind.group, name))
	}
	return simReply{code: http.StatusOK, body: o.raw}
}

func (s *simAPIServer) create(kind simKind, namespace string, body []byte) simReply {
	obj := kind.newObject()
	if err := json.Unmarshal(body, obj); err != nil {
		return simStatus(apierrors.NewBadRequest(err.Error()))
	}
	if r, bad := simValidate(kind, obj); bad {
		return r
	}
	s.mu.Lock()
	key := simKey(kind.resource, namespace, obj.GetName())
	if s.objects[key] != nil {
		s.mu.Unlock()
		return simStatus(apierrors.NewAlreadyExists(kind.group, obj.GetName()))
	}
	s.uids++
	obj.SetUID(types.UID(fmt.Sprintf("uid-%d", s.uids)))
	obj.SetCreationTimestamp(metav1.NewTime(time.Now()))
	obj.SetNamespace(namespace)
	raw, rv := s.storeLocked(kind, key, obj, "ADDED")
	s.mu.Unlock()
	s.wrote("create "+kind.resource, rv, raw)
	return simReply{code: http.StatusCreated, body: raw}
}

func (s *simAPIServer) update(kind simKind, namespace, name string, body []byte) simReply {
	obj := kind.newObject()
	if err := json.Unmarshal(body, obj); err != nil {
		return simStatus(apierrors.NewBadRequest(err.Error()))
	}
	if obj.GetName() != name {
		return simStatus(apierrors.NewBadRequest("the name of the object does not match the name on the URL"))
	}
	if r, bad := simValidate(kind, obj); bad {
		return r
	}
	s.mu.Lock()
	key := simKey(kind.resource, namespace, name)
	cur := s.objects[key]
	if cur == nil {
		s.mu.Unlock()
		return simStatus(apierrors.NewNotFound(kind.group, name))
	}
	if rv := obj.GetResourceVersion(); rv != "" && rv != strconv.FormatInt(cur.rv, 10) {
		s.mu.Unlock()
		return simStatus(apierrors.NewConflict(kind.group, name,
			fmt.Errorf("the object has been modified; please apply your changes to the latest version and try again")))
	}
	// The server owns these; a client cannot change them.
	obj.SetUID(cur.uid)
	obj.SetCreationTimestamp(cur.created)
	obj.SetNamespace(namespace)
	raw, rv := s.storeLocked(kind, key, obj, "MODIFIED")
	s.mu.Unlock()
	s.wrote("update "+kind.resource, rv, raw)
	return simReply{code: http.StatusOK, body: raw}
}

// simValidate rejects what kube-apiserver's validation rejects of what the
// elector writes.
func simValidate(kind simKind, obj object) (simReply, bool) {
	if l, ok := obj.(*coordinationv1.Lease); ok {
		var errs field.ErrorList
		if d := l.Spec.LeaseDurationSeconds; d != nil && *d <= 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "leaseDurationSeconds"), *d, "must be greater than 0"))
		}
		if t := l.Spec.LeaseTransitions; t != nil && *t < 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", "leaseTransitions"), *t, "must be greater than or equal to 0"))
		}
		if len(errs) > 0 {
			return simStatus(apierrors.NewInvalid(schema.GroupKind{Group: kind.group.Group, Kind: kind.kind}, l.Name, errs)), true
		}
	}
	return simReply{}, false
}

// storeLocked writes obj under key with a new resourceVersion and tells the
// watches.
func (s *simAPIServer) storeLocked(kind simKind, key string, obj object, eventType string) ([]byte, int64) {
	s.rv++
	obj.SetResourceVersion(strconv.FormatInt(s.rv, 10))
	obj.GetObjectKind().SetGroupVersionKind(schema.FromAPIVersionAndKind(kind.apiVersion, kind.kind))
	raw := simMustJSON(obj)
	s.objects[key] = &simObject{kind: kind, rv: s.rv, raw: raw, uid: obj.GetUID(), created: obj.GetCreationTimestamp()}
	s.publishLocked(key, eventType, raw)
	return raw, s.rv
}

// publishLocked records an event and queues it on every watch of key.
func (s *simAPIServer) publishLocked(key, eventType string, raw []byte) {
	ev := simWatchEvent{key: key, rv: s.rv, raw: simEncodeEvent(eventType, raw)}
	s.history = append(s.history, ev)
	if len(s.history) > s.keep {
		s.history = s.history[len(s.history)-s.keep:]
	}
	for _, w := range s.watches {
		if w.key == key {
			w.push(simWatchItem{data: ev.raw})
		}
	}
}

// remove deletes the object, as `kubectl delete` would.
func (s *simAPIServer) remove(resource, namespace, name string) bool {
	s.mu.Lock()
	key := simKey(resource, namespace, name)
	cur := s.objects[key]
	if cur == nil {
		s.mu.Unlock()
		return false
	}
	obj := cur.kind.newObject()
	simMustUnmarshal(cur.raw, obj)
	s.rv++
	obj.SetResourceVersion(strconv.FormatInt(s.rv, 10))
	raw := simMustJSON(obj)
	delete(s.objects, key)
	s.publishLocked(key, "DELETED", raw)
	rv := s.rv
	s.mu.Unlock()
	s.wrote("delete "+resource, rv, raw)
	return true
}

// overwrite replaces (or creates) the object with what edit makes of it, as
// a person or another program would, without a compare-and-swap.
func (s *simAPIServer) overwrite(resource, namespace, name string, edit func(object)) {
	kind, _ := simKindOf(resource)
	s.mu.Lock()
	key := simKey(resource, namespace, name)
	obj := kind.newObject()
	eventType := "ADDED"
	if cur := s.objects[key]; cur != nil {
		simMustUnmarshal(cur.raw, obj)
		eventType = "MODIFIED"
	} else {
		s.uids++
		obj.SetName(name)
		obj.SetNamespace(namespace)
		obj.SetUID(types.UID(fmt.Sprintf("uid-%d", s.uids)))
		obj.SetCreationTimestamp(metav1.NewTime(time.Now()))
	}
	edit(obj)
	raw, rv := s.storeLocked(kind, key, obj, eventType)
	s.mu.Unlock()
	s.wrote("overwrite "+resource, rv, raw)
}

// watch starts a watch of one object: from resourceVersion "" (or "0") with
// the object as it is now, from a given one with every change after it.
// Outside the history it answers 410 Gone, beyond the newest version 504
// "Too large resource version", in the stream, as kube-apiserver does.
func (s *simAPIServer) watch(kind simKind, namespace string, q url.Values) simReply {
	sel := q.Get("fieldSelector")
	name, ok := strings.CutPrefix(sel, "metadata.name=")
	if !ok || strings.ContainsAny(name, ",=!") {
		return simStatus(apierrors.NewBadRequest("the simulated API server only serves watches of one object, by metadata.name: " + sel))
	}
	timeout := 1800 * time.Second
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return simStatus(apierrors.NewBadRequest("timeoutSeconds: " + err.Error()))
		}
		timeout = time.Duration(n) * time.Second
	}
	key := simKey(kind.resource, namespace, name)
	w := newSimWatch(key, time.Now().Add(timeout), kind, q.Get("allowWatchBookmarks") == "true")

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		w.push(simWatchItem{end: true})
		return simReply{code: http.StatusOK, watch: w}
	}
	switch from := q.Get("resourceVersion"); from {
	case "", "0":
		if o := s.objects[key]; o != nil {
			w.push(simWatchItem{data: simEncodeEvent("ADDED", o.raw)})
		}
	default:
		rv, err := strconv.ParseInt(from, 10, 64)
		if err != nil {
			return simStatus(apierrors.NewBadRequest("resourceVersion: " + err.Error()))
		}
		oldest := s.rv + 1
		if len(s.history) > 0 {
			oldest = s.history[0].rv
		}
		switch {
		case rv > s.rv:
			w.push(simWatchItem{data: simEncodeEvent("ERROR", simStatusJSON(simTooLarge(rv, s.rv))), end: true})
			return simReply{code: http.StatusOK, watch: w}
		case rv < oldest-1:
			w.push(simWatchItem{data: simEncodeEvent("ERROR", simStatusJSON(simTooOld(rv, oldest))), end: true})
			return simReply{code: http.StatusOK, watch: w}
		}
		for _, ev := range s.history {
			if ev.key == key && ev.rv > rv {
				w.push(simWatchItem{data: ev.raw})
			}
		}
	}
	s.watches = append(s.watches, w)
	return simReply{code: http.StatusOK, watch: w}
}

// bookmark is what the server sends on a watch that allows bookmarks: the
// current resourceVersion, on an object of the watched kind.
func (s *simAPIServer) bookmark(w *simWatch) []byte {
	s.mu.Lock()
	rv := s.rv
	s.mu.Unlock()
	obj := w.kind.newObject()
	obj.SetResourceVersion(strconv.FormatInt(rv, 10))
	obj.GetObjectKind().SetGroupVersionKind(schema.FromAPIVersionAndKind(w.kind.apiVersion, w.kind.kind))
	return simEncodeEvent("BOOKMARK", simMustJSON(obj))
}

// forget drops a watch that has ended.
func (s *simAPIServer) forget(w *simWatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.watches {
		if x == w {
			s.watches = append(s.watches[:i], s.watches[i+1:]...)
			return
		}
	}
}

// close ends every watch; the simulation is over.
func (s *simAPIServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, w := range s.watches {
		w.push(simWatchItem{end: true})
	}
	s.watches = nil
}

func simTooOld(rv, oldest int64) *apierrors.StatusError {
	return apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", rv, oldest-1))
}

func simTooLarge(rv, current int64) *apierrors.StatusError {
	err := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rv, current), 1)
	err.ErrStatus.Details.Causes = []metav1.StatusCause{{
		Type:    metav1.CauseTypeResourceVersionTooLarge,
		Message: "Too large resource version",
	}}
	return err
}

// simStatus is an error answer: a Status object with the error's code.
func simStatus(err *apierrors.StatusError) simReply {
	return simReply{code: int(err.ErrStatus.Code), body: simStatusJSON(err)}
}

func simStatusJSON(err *apierrors.StatusError) []byte {
	st := err.ErrStatus
	st.APIVersion, st.Kind = "v1", "Status"
	return simMustJSON(st)
}

func simEncodeEvent(eventType string, object []byte) []byte {
	b := simMustJSON(struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}{eventType, object})
	return append(b, '\n')
}

func simMustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func simMustUnmarshal(b []byte, v any) {
	if err := json.Unmarshal(b, v); err != nil {
		panic(err)
	}
}

// TestSimAPIServer checks that the simulated API server answers the
// elector's requests as kube-apiserver does, through the elector's own
// clients: status codes and reasons, resourceVersions, precision, watches.
func TestSimAPIServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plan := &simPlan{Seed: 1, TTL: simDuration(10 * time.Second)}
		w := &simWorld{t: t, plan: plan, server: newSimAPIServer(3), live: newSimLiveness(plan),
			done: make(chan struct{}), wake: make(chan struct{}, 1)}
		defer close(w.done)
		w.server.wrote = w.wrote
		clients, err := NewClients(&rest.Config{Host: "http://sim.invalid", ContentConfig: simContent, Transport: newSimNet(w, 0, simNetParams{Latency: simDuration(time.Millisecond)})}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		leases := func() *rest.Request {
			return clients.Coordination.Get().Namespace("default").Resource("leases")
		}
		put := func(l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
			out := &coordinationv1.Lease{}
			return out, clients.Coordination.Put().Namespace("default").Resource("leases").Name(l.Name).Body(l).Do(ctx).Into(out)
		}

		// An Event first: resourceVersions count every write.
		if err := clients.Core.Post().Namespace("default").Resource("events").Body(&event{ObjectMeta: metav1.ObjectMeta{Name: "e"}}).Do(ctx).Error(); err != nil {
			t.Errorf("POST of an Event: %v", err)
		}
		if err := leases().Name("sim").Do(ctx).Error(); !apierrors.IsNotFound(err) {
			t.Errorf("GET of a missing lease: %v, want NotFound", err)
		}
		holder := "a"
		renew := metav1.NewMicroTime(time.Now().Add(123456789))
		in := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "sim"}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &renew}}
		created := &coordinationv1.Lease{}
		if err := clients.Coordination.Post().Namespace("default").Resource("leases").Body(in).Do(ctx).Into(created); err != nil {
			t.Fatalf("POST: %v", err)
		}
		if got, want := created.Spec.RenewTime.Time, renew.Truncate(time.Microsecond); !got.Equal(want) {
			t.Errorf("the server stored renewTime %s, want microseconds %s", got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
		}
		if err := clients.Coordination.Post().Namespace("default").Resource("leases").Body(in).Do(ctx).Error(); !apierrors.IsAlreadyExists(err) {
			t.Errorf("second POST: %v, want AlreadyExists", err)
		}
		updated, err := put(created)
		if err != nil {
			t.Fatalf("PUT on the current resourceVersion: %v", err)
		}
		if updated.ResourceVersion == created.ResourceVersion || updated.UID != created.UID {
			t.Errorf("PUT: resourceVersion %s -> %s, uid %s -> %s; want a new version of the same object",
				created.ResourceVersion, updated.ResourceVersion, created.UID, updated.UID)
		}
		if _, err := put(created); !apierrors.IsConflict(err) {
			t.Errorf("PUT on a stale resourceVersion: %v, want Conflict", err)
		}
		missing := created.DeepCopy()
		missing.Name = "other"
		if _, err := put(missing); !apierrors.IsNotFound(err) {
			t.Errorf("PUT of a missing lease: %v, want NotFound", err)
		}
		zero := int32(0)
		invalid := updated.DeepCopy()
		invalid.Spec.LeaseDurationSeconds = &zero
		if _, err := put(invalid); !apierrors.IsInvalid(err) {
			t.Errorf("PUT of leaseDurationSeconds 0: %v, want Invalid", err)
		}

		watch := func(rv string) []string {
			timeout := int64(1)
			wi, err := leases().VersionedParams(&metav1.ListOptions{
				FieldSelector: "metadata.name=sim", ResourceVersion: rv, Watch: true, TimeoutSeconds: &timeout,
			}, metav1.ParameterCodec).Watch(ctx)
			if err != nil {
				return []string{"error " + err.Error()}
			}
			defer wi.Stop()
			var got []string
			for ev := range wi.ResultChan() {
				switch o := ev.Object.(type) {
				case *coordinationv1.Lease:
					got = append(got, string(ev.Type)+" "+o.ResourceVersion)
				case *metav1.Status:
					got = append(got, fmt.Sprintf("%s %d %s", ev.Type, o.Code, o.Reason))
				}
			}
			return got
		}
		first, _ := strconv.Atoi(created.ResourceVersion)
		last, _ := strconv.Atoi(updated.ResourceVersion)
		for _, tc := range []struct {
			from string
			want []string
		}{
			{"", []string{"ADDED " + updated.ResourceVersion}},
			{created.ResourceVersion, []string{"MODIFIED " + updated.ResourceVersion}},
			{strconv.Itoa(first - 1), []string{"ADDED " + created.ResourceVersion, "MODIFIED " + updated.ResourceVersion}},
			{strconv.Itoa(last + 5), []string{"ERROR 504 Timeout"}},
		} {
			if diff := cmp.Diff(tc.want, watch(tc.from)); diff != "" {
				t.Errorf("watch from %q (-want +got):\n%s", tc.from, diff)
			}
		}
		// Past the history the server keeps, a watch is told to list again.
		for range 3 {
			cur := &coordinationv1.Lease{}
			if err := leases().Name("sim").Do(ctx).Into(cur); err != nil {
				t.Fatal(err)
			}
			if _, err := put(cur); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff([]string{"ERROR 410 Expired"}, watch(created.ResourceVersion)); diff != "" {
			t.Errorf("watch from a compacted version (-want +got):\n%s", diff)
		}
		w.server.remove("leases", "default", "sim")
		if got := watch(""); len(got) != 0 {
			t.Errorf("watch of a deleted lease from now: %v, want nothing", got)
		}

		cm := &configMap{rawObject{ObjectMeta: metav1.ObjectMeta{Name: "sim", Annotations: map[string]string{LeaderAnnotation: upstream}}}}
		gotCM := &configMap{}
		if err := clients.Core.Post().Namespace("default").Resource("configmaps").Body(cm).Do(ctx).Into(gotCM); err != nil {
			t.Fatal(err)
		}
		if got := gotCM.Annotations[LeaderAnnotation]; got != upstream {
			t.Errorf("the record annotation came back as %s, want it as written: %s", got, upstream)
		}
		if err := clients.Core.Patch(types.MergePatchType).Namespace("default").Resource("pods").Name("p").Body([]byte(`{}`)).Do(ctx).Error(); err != nil {
			t.Errorf("PATCH of a pod: %v", err)
		}
	})
}
