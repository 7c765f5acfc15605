package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/routing"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// electionSpec is one election of the topology.
type electionSpec struct {
	name      string
	namespace string
	lock      election.LockType
	ttl       time.Duration
	size      int // participants at the start
}

// renew and retry are the elector's defaults for the ttl: the harness
// gives only -ttl, as most users do.
func (s electionSpec) renew() time.Duration { r, _ := election.DefaultTimings(s.ttl); return r }
func (s electionSpec) retry() time.Duration { _, r := election.DefaultTimings(s.ttl); return r }

// electionState is an election while the harness runs it.
type electionState struct {
	electionSpec
	// tokens are the two accounts' tokens: with and without watch.
	token, noWatchToken string

	// routes watches the Service its electors keep with -leader-service,
	// on Lease elections (see routing.Watch); nil on the others. ipOf
	// maps each participant to the pod IP it lists.
	routes *routing.Log

	mu      sync.Mutex
	members []*participant
	joined  int
	ipOf    map[string]string
}

// routed reports whether the election's electors keep a Service's
// endpoints: on Leases, which internal/routing reads.
func (s electionSpec) routed() bool { return s.lock == election.LockLeases }

// setupElection makes the election's namespace and its two service
// accounts: "elector", with every right the elector uses on its lock, and
// "elector-nowatch", the same without watch, so its electors read the lock
// every retry period instead.
func setupElection(ctx context.Context, cp *cluster, spec electionSpec) (*electionState, error) {
	admin := cp.admin
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: spec.namespace}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("namespace %s: %w", spec.namespace, err)
	}
	group := ""
	if spec.lock == election.LockLeases {
		group = "coordination.k8s.io"
	}
	es := &electionState{electionSpec: spec, ipOf: map[string]string{}}
	if spec.routed() {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: spec.name, Namespace: spec.namespace, Annotations: map[string]string{election.AnnotationElection: spec.name}},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
		if _, err := admin.CoreV1().Services(spec.namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", spec.namespace, spec.name, err)
		}
	}
	for _, account := range []struct {
		name  string
		verbs []string
		token *string
	}{
		{"elector", []string{"get", "update", "watch"}, &es.token}, //nolint:goconst // RBAC verbs read best as the API spells them
		{"elector-nowatch", []string{"get", "update"}, &es.noWatchToken},
	} {
		rules := []rbacv1.PolicyRule{
			{APIGroups: []string{group}, Resources: []string{string(spec.lock)}, ResourceNames: []string{spec.name}, Verbs: account.verbs},
			{APIGroups: []string{group}, Resources: []string{string(spec.lock)}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
		}
		if spec.routed() {
			rules = append(rules,
				rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{spec.name}, Verbs: []string{"get"}},
				rbacv1.PolicyRule{
					APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"},
					ResourceNames: []string{spec.name}, Verbs: []string{"get", "update"},
				},
				rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"create"}},
			)
		}
		meta := metav1.ObjectMeta{Name: account.name, Namespace: spec.namespace}
		if _, err := admin.CoreV1().ServiceAccounts(spec.namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if _, err := admin.RbacV1().Roles(spec.namespace).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: rules}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		binding := &rbacv1.RoleBinding{
			ObjectMeta: meta,
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: account.name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: account.name, Namespace: spec.namespace}},
		}
		if _, err := admin.RbacV1().RoleBindings(spec.namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		tr, err := admin.CoreV1().ServiceAccounts(spec.namespace).CreateToken(ctx, account.name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](4 * 3600)},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("token for %s/%s: %w", spec.namespace, account.name, err)
		}
		*account.token = tr.Status.Token
	}
	return es, nil
}

// participant is one elector process with its own relay to the API server.
type participant struct {
	id      string
	e       *electionState
	noWatch bool
	*controlplane.Process
	addr    string
	relay   *relay
	logPath string

	mu sync.Mutex
	// ended is when the harness sent SIGKILL or SIGTERM: from then on the
	// process may stop answering.
	ended time.Time
	// released is when the harness sent SIGTERM: a leader then releases
	// the lock, and the next may lead at once.
	released time.Time
	freezes  []freeze

	// Written by the checker.
	terms      []term
	open       *term
	answers    int
	inflight   time.Time // when the pending request was sent; zero if none
	lastSent   time.Time
	unanswered int
}

// freeze is one SIGSTOP: signalled when it was sent, stopped once every
// thread was seen stopped, resumed just before SIGCONT was sent (zero while
// still stopped).
type freeze struct{ signalled, stopped, resumed time.Time }

// startParticipant runs the elector through a relay of its own.
func startParticipant(ctx context.Context, bin, logDir string, cp *cluster, es *electionState, noWatch bool) (*participant, error) {
	es.mu.Lock()
	es.joined++
	n := es.joined
	id := fmt.Sprintf("%s-%d", es.name, n)
	if noWatch {
		id += "-nowatch"
	}
	var routed []string
	if es.routed() {
		es.ipOf[id] = fmt.Sprintf("10.%d.%d.%d", 100+len(es.name)%100, n/250, n%250+1)
		routed = []string{"-leader-service=" + es.name, "-pod-name=" + id, "-pod-ip=" + es.ipOf[id]}
	}
	es.mu.Unlock()
	r, err := newRelay(cp.host)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(cp.cfg)
	cfg.Host = "https://" + r.addr
	token := es.token
	if noWatch {
		token = es.noWatchToken
	}
	kc, err := controlplane.Kubeconfig(cfg, token)
	if err != nil {
		r.Close()
		return nil, err
	}
	kubeconfig := filepath.Join(logDir, id+".kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		r.Close()
		return nil, err
	}
	p := &participant{id: id, e: es, noWatch: noWatch, relay: r, logPath: filepath.Join(logDir, id+".log")}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		r.Close()
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{
		"-election=" + es.name, "-namespace=" + es.namespace, "-lock-type=" + string(es.lock),
		"-ttl=" + es.ttl.String(), "-id=" + id, "-kubeconfig=" + kubeconfig, "-http=127.0.0.1:0", "-v=1"}, routed...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.Process, p.addr, err = controlplane.StartElector(ctx, cmd, logFile, nil, 20*time.Second)
	if err != nil {
		r.Close()
		logFile.Close()
		return nil, fmt.Errorf("elector %s: %w", id, err)
	}
	go func() {
		<-p.Done()
		logFile.Close()
		r.Close()
	}()
	es.mu.Lock()
	es.members = append(es.members, p)
	es.mu.Unlock()
	return p, nil
}

// running: alive, not asked to end, not stopped. Only running
// participants are targets of faults.
func (p *participant) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.Exited() && p.ended.IsZero() && (len(p.freezes) == 0 || !p.freezes[len(p.freezes)-1].resumed.IsZero())
}

// end sends SIGKILL or SIGTERM.
func (p *participant) end(sig syscall.Signal) time.Time {
	p.mu.Lock()
	now := time.Now()
	if p.ended.IsZero() {
		p.ended = now
		if sig == syscall.SIGTERM {
			p.released = now
		}
	}
	p.mu.Unlock()
	_ = p.Signal(sig)
	return now
}

// stop sends SIGSTOP and returns once every thread of the process is seen
// stopped, with when the signal was sent.
func (p *participant) stop() (time.Time, error) {
	signalled := time.Now()
	p.mu.Lock()
	p.freezes = append(p.freezes, freeze{signalled: signalled})
	p.mu.Unlock()
	if err := p.Freeze(5 * time.Second); err != nil {
		return signalled, fmt.Errorf("%s: %w", p.id, err)
	}
	p.mu.Lock()
	p.freezes[len(p.freezes)-1].stopped = time.Now()
	p.mu.Unlock()
	return signalled, nil
}

// cont sends SIGCONT and returns the instant just before it was sent.
func (p *participant) cont() time.Time {
	p.mu.Lock()
	now := time.Now()
	if n := len(p.freezes); n > 0 && p.freezes[n-1].resumed.IsZero() {
		p.freezes[n-1].resumed = now
	}
	p.mu.Unlock()
	_ = p.Signal(syscall.SIGCONT)
	return now
}

// kill ends the process at the end of the run.
func (p *participant) kill() {
	p.end(syscall.SIGKILL)
	_ = p.Signal(syscall.SIGCONT)
	<-p.Done()
}
