package elector

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// access is one request an elector's account may or may not make.
type access struct {
	verb, group, resource, name string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += "/" + a.name
	}
	return s
}

// allowed asks the API server's authorizer which of reqs the service
// account "elector" in ns may make there.
func allowed(t *testing.T, ns string, reqs []access) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, a := range reqs {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + ns + ":elector",
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: a.verb, Group: a.group, Resource: a.resource, Name: a.name,
			},
		}}
		out, err := env.Client.AuthorizationV1().SubjectAccessReviews().Create(ctxFor(t, apiTimeout), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got[a.String()] = out.Status.Allowed
	}
	return got
}

// TestLeastPrivilege checks what the elector's account may do with the
// shipped Roles and with a Role limited to one election by name: what the
// elector needs, and nothing else that matters (no list, no delete, no
// other objects, no Secrets, no other namespace).
func TestLeastPrivilege(t *testing.T) {
	lease := func(verb, name string) access { return access{verb, "coordination.k8s.io", "leases", name} }
	core := func(verb, resource, name string) access { return access{verb, "", resource, name} }
	needed := []access{
		lease("get", electionName), lease("update", electionName), lease("watch", electionName), lease("create", ""),
		core("create", "events", ""),
	}
	never := []access{
		lease("list", ""), lease("delete", electionName), lease("deletecollection", ""), lease("patch", electionName),
		core("get", "secrets", "x"), core("list", "secrets", ""), core("watch", "secrets", ""),
		core("list", "pods", ""), core("watch", "pods", ""), core("create", "pods", ""), core("delete", "pods", "x"),
		core("get", "configmaps", electionName), core("list", "configmaps", ""), core("update", "configmaps", electionName),
		core("get", "endpoints", electionName), core("list", "events", ""), core("delete", "events", "x"),
		core("create", "serviceaccounts/token", "elector"),
		{"create", "rbac.authorization.k8s.io", "rolebindings", ""},
	}
	podLabel := []access{core("get", "pods", "x"), core("patch", "pods", "x")}
	otherLease := []access{lease("get", "other"), lease("update", "other"), lease("watch", "other")}

	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, ns string)
		allow []access
		deny  []access
	}{
		{
			name:  "shipped",
			setup: func(t *testing.T, ns string) { serviceAccountKubeconfig(t, ns, false) },
			allow: needed,
			deny:  append(append(append([]access{}, never...), podLabel...), otherLease...),
		},
		{
			name:  "shipped with pod-label",
			setup: func(t *testing.T, ns string) { serviceAccountKubeconfig(t, ns, true) },
			allow: append(append([]access{}, needed...), podLabel...),
			deny:  append(append([]access{}, never...), otherLease...),
		},
		{
			name: "one election by name",
			setup: func(t *testing.T, ns string) {
				accountWithRules(t, ns, electionRules(election.LockLeases, electionName, true, false))
			},
			allow: needed,
			deny:  append(append(append([]access{}, never...), podLabel...), otherLease...),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			tt.setup(t, ns)
			want := map[string]bool{}
			for _, a := range tt.allow {
				want[a.String()] = true
			}
			for _, a := range tt.deny {
				want[a.String()] = false
			}
			got := allowed(t, ns, append(append([]access{}, tt.allow...), tt.deny...))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("rights of the elector's account (-want +got):\n%s", diff)
			}
			// Nothing in another namespace.
			other := env.Namespace(t)
			for a, ok := range allowedAs(t, ns, other, tt.allow) {
				if ok {
					t.Errorf("the elector's account may %s in another namespace", a)
				}
			}
		})
	}
}

// allowedAs is allowed for the account of ns, asked about namespace in.
func allowedAs(t *testing.T, ns, in string, reqs []access) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, a := range reqs {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + ns + ":elector",
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: in, Verb: a.verb, Group: a.group, Resource: a.resource, Name: a.name},
		}}
		out, err := env.Client.AuthorizationV1().SubjectAccessReviews().Create(ctxFor(t, apiTimeout), review, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got[a.String()] = out.Status.Allowed
	}
	return got
}

// TestRightsArriveLater starts electors whose service account has no rights
// yet, as when an injected pod starts before the injector has bound its
// Role: once they have been refused, nobody leads, yet they stay ready (the
// election runs; an RBAC delay must not make the app's pod NotReady); once
// the binding appears, they elect a leader without a restart.
func TestRightsArriveLater(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := unboundAccount(t, ns)
	w := newWatcher(t, std.gap())
	args := electionArgs(ns, std)
	ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...)}
	for _, p := range ps {
		eventually(t, 10*time.Second, func() error {
			if !strings.Contains(p.Logs(), "forbidden") {
				return fmt.Errorf("%s has logged no refusal", p.id)
			}
			return nil
		})
	}
	for _, p := range ps {
		if s, ok := w.firstTrue(p, p.started); ok {
			t.Fatalf("%s led at %s without rights", p.id, s.to.Format(time.StampMilli))
		}
		code, body, err := p.get("/readyz")
		if err != nil || code != http.StatusOK {
			t.Errorf("/readyz on %s without rights = %d %q, %v; want 200 while the election runs", p.id, code, body, err)
		}
	}
	bindShippedRoles(t, ns, false)
	w.waitLeader(settle, ps...)
}

// TestNoWatchRight runs electors under the Role that upstream's chart
// grants: get, create and update on leases, and no watch. Followers then
// read the lock every retry period instead: a leader that is killed is
// replaced within ttl + retry period of its last renewal, and readiness
// never flaps.
func TestNoWatchRight(t *testing.T) {
	ns := env.Namespace(t)
	kubeconfig := accountWithRules(t, ns, []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	})
	// A longer ttl than std's makes a follower that reads the lock only when
	// the lease it saw runs out (up to two ttls to fail over) stand out from
	// one that reads it every retry period.
	tm := timing{ttl: 6 * time.Second, renew: 2 * time.Second, retry: time.Second}
	w := newWatcher(t, tm.gap())
	args := electionArgs(ns, tm)
	ps := []*participant{w.start("a", kubeconfig, args...), w.start("b", kubeconfig, args...), w.start("c", kubeconfig, args...)}
	stopReady := checkReady(t, ps)
	defer stopReady()
	leader := w.waitLeader(settle, ps...)
	for range 2 {
		// Let the followers see a few renewals first.
		time.Sleep(2 * tm.retry)
		rec := readLock(t, election.LockLeases, ns)
		killed, _ := leader.stop(t, syscall.SIGKILL)
		// The last renewal may have landed after the read: read again.
		if r := readLock(t, election.LockLeases, ns); r.HolderIdentity == leader.id {
			rec = r
		}
		next := w.waitLeader(settle, ps...)
		took, _ := w.firstTrue(next, killed)
		t.Logf("%s took over %s after %s's last renewal", next.id, took.from.Sub(rec.RenewTime.Time).Round(time.Millisecond), leader.id)
		if d := took.from.Sub(rec.RenewTime.Time); d > tm.ttl+tm.retry+2500*time.Millisecond {
			t.Errorf("%s took over %s after %s's last renewal, want within ttl + retry period (%s) with 2.5s slack", next.id, d.Round(time.Millisecond), leader.id, tm.ttl+tm.retry)
		}
		leader = next
	}
}
