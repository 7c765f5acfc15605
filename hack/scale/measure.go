package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
)

// namespace holds every election of a run.
const namespace = "scale"

// measure runs one size on a control plane of its own.
func measure(ctx context.Context, o options, sz size) (r result, err error) {
	r.size = sz
	env, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, env.Stop()) }()
	m := &measurement{env: env}
	if m.apiPID, err = onePID("kube-apiserver", env.Env.ControlPlane.APIServer.CertDir); err != nil {
		return r, err
	}
	if m.etcdPID, err = onePID("etcd", env.Env.ControlPlane.Etcd.DataDir); err != nil {
		return r, err
	}
	dir, err := os.MkdirTemp("", "k8s-elector-scale-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	if o.policy != "" {
		if err := m.applyPolicy(ctx, o.policy); err != nil {
			return r, err
		}
	}
	progress("%s: granting %d service accounts", sz, sz.elections)
	elections, err := m.setup(ctx, dir, sz.elections, o.locks)
	if err != nil {
		return r, err
	}

	progress("%s: idle control plane for %s", sz, o.idle)
	idle, err := m.window(ctx, o.idle)
	if err != nil {
		return r, err
	}

	logDir := ""
	if o.logs != "" {
		logDir = filepath.Join(o.logs, sz.String())
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return r, err
		}
	}
	progress("%s: starting %d electors", sz, sz.elections*sz.participants)
	start := time.Now()
	defer func() {
		for _, p := range m.electors {
			p.Kill()
		}
	}()
	// Participant j of every election before participant j+1 of any, as
	// the pods of many Deployments rolled out at once would come up.
	for j := range sz.participants {
		for i, e := range elections {
			p, err := startElector(o.elector, logDir, namespace, i, e, fmt.Sprintf("%s-%d", e.name, j))
			if err != nil {
				return r, err
			}
			m.electors = append(m.electors, p)
		}
	}
	electedAt, err := m.waitElected(ctx, sz.elections, o.electTimeout)
	if err != nil {
		return r, err
	}
	r.allElected = electedAt[len(electedAt)-1].Sub(start)
	r.electedP50 = percentile(electedAt, 50).Sub(start)
	progress("%s: every election has one leader after %s; settling for %s", sz, r.allElected.Round(time.Millisecond), o.settle)
	if err := sleep(ctx, o.settle); err != nil {
		return r, err
	}

	progress("%s: steady state for %s", sz, o.window)
	before := tally(sz.elections, sweep(ctx, m.electors))
	steady, err := m.window(ctx, o.window)
	if err != nil {
		return r, err
	}
	after := tally(sz.elections, sweep(ctx, m.electors))
	for i := range before {
		if before[i].elected && after[i].elected && before[i].leader == after[i].leader {
			r.stable++
		}
	}
	if err := m.exited(); err != nil {
		return r, err
	}

	var sizes []int64
	for _, p := range m.electors {
		n, err := rss(p.Cmd.Process.Pid)
		if err != nil {
			return r, fmt.Errorf("elector %s: %w", p.id, err)
		}
		sizes = append(sizes, n)
		r.electorsRSS += n
	}
	slices.Sort(sizes)
	r.electorRSSp50, r.electorRSSMax = percentile(sizes, 50), sizes[len(sizes)-1]
	if r.apiRSS, err = rss(m.apiPID); err != nil {
		return r, err
	}
	if r.etcdRSS, err = rss(m.etcdPID); err != nil {
		return r, err
	}
	r.idle, r.steady = idle, steady
	return r, nil
}

// measurement is one size's control plane and electors.
type measurement struct {
	env             *controlplane.Env
	apiPID, etcdPID int
	electors        []*elector
}

// onePID finds the one process of the control plane whose command line
// names marker (its certificate or data directory).
func onePID(name, marker string) (int, error) {
	pids := controlplane.Processes(marker)
	if len(pids) != 1 {
		return 0, fmt.Errorf("%d %s processes name %s, want 1: %v", len(pids), name, marker, pids)
	}
	return pids[0], nil
}

// applyPolicy installs a ValidatingAdmissionPolicy and its binding.
func (m *measurement) applyPolicy(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-policy: %w (run from the repository's root, or set -policy= for none)", err)
	}
	objs, err := controlplane.Decode(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return m.env.Apply(ctx, m.env.Config, objs, false)
}

// setup gives each of n elections a service account of its own, with the
// Role and RoleBinding the injector's reconciler would give it, and writes
// a kubeconfig with the account's token.
func (m *measurement) setup(ctx context.Context, dir string, n int, locks lockMix) ([]electionSetup, error) {
	core := m.env.Client.CoreV1()
	rbac := m.env.Client.RbacV1()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	var out []electionSetup
	for i := range n {
		e := electionSetup{name: fmt.Sprintf("scale-%03d", i), lock: locks.of(i)}
		account := grants.Account{Name: e.name, Elections: map[election.LockType][]string{e.lock: {e.name}}}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account.Name, Namespace: namespace}}
		if _, err := core.ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("service account %s: %w", account.Name, err)
		}
		if _, err := rbac.Roles(namespace).Create(ctx, grants.DesiredRole(namespace, account), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("role for %s: %w", account.Name, err)
		}
		if _, err := rbac.RoleBindings(namespace).Create(ctx, grants.DesiredRoleBinding(namespace, account), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("role binding for %s: %w", account.Name, err)
		}
		token, err := controlplane.Token(ctx, m.env.Client, namespace, account.Name, nil)
		if err != nil {
			return nil, err
		}
		kc, err := controlplane.Kubeconfig(m.env.Config, token)
		if err != nil {
			return nil, err
		}
		e.kubeconfig = filepath.Join(dir, e.name+".kubeconfig")
		if err := os.WriteFile(e.kubeconfig, kc, 0o600); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// waitElected sweeps the participants until, in one sweep, every election
// has exactly one leader among participants that all answer. It returns
// when each election was first seen so, sorted; the last is when all were.
func (m *measurement) waitElected(ctx context.Context, n int, timeout time.Duration) ([]time.Time, error) {
	first := make([]time.Time, n)
	deadline := time.Now().Add(timeout)
	for {
		verdicts := tally(n, sweep(ctx, m.electors))
		all := true
		for i, v := range verdicts {
			if v.elected && first[i].IsZero() {
				first[i] = v.at
			}
			all = all && v.elected
		}
		if all {
			// The moment they all were: the sweep's last answer.
			last := slices.MaxFunc(verdicts, func(a, b verdict) int { return a.at.Compare(b.at) }).at
			slices.SortFunc(first, time.Time.Compare)
			first[n-1] = last
			return first, nil
		}
		if err := m.exited(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			var missing int
			for _, v := range verdicts {
				if !v.elected {
					missing++
				}
			}
			return nil, fmt.Errorf("%d of %d elections without exactly one leader after %s (raise -elect-timeout)", missing, n, timeout)
		}
		// A pause between sweeps leaves the cores to the electors.
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// exited fails when any elector has exited: none should, so the figures
// would be of fewer participants than asked.
func (m *measurement) exited() error {
	for _, p := range m.electors {
		if gone, log := p.exited(); gone {
			return errors.New(log)
		}
	}
	return nil
}

// snapshot is the control plane's request counts and the CPU time used so
// far by kube-apiserver, etcd and the electors.
type snapshot struct {
	at                     time.Time
	requests               requests
	api, etcd, electorsCPU float64 // seconds
	machine                float64 // seconds of all cores
}

// usage is what the control plane and the electors did between two
// snapshots, per second.
type usage struct {
	requests                     requests
	apiCPU, etcdCPU, electorsCPU float64 // seconds per second
	// machineCPU is every core's busy time, whoever used it: on a shared
	// machine, what the figures were measured beside.
	machineCPU float64
}

func between(a, b snapshot) usage {
	seconds := b.at.Sub(a.at).Seconds()
	return usage{
		requests:    b.requests.rates(a.requests, seconds),
		apiCPU:      (b.api - a.api) / seconds,
		etcdCPU:     (b.etcd - a.etcd) / seconds,
		electorsCPU: (b.electorsCPU - a.electorsCPU) / seconds,
		machineCPU:  (b.machine - a.machine) / seconds,
	}
}

// window measures requests and CPU over d.
func (m *measurement) window(ctx context.Context, d time.Duration) (usage, error) {
	a, err := m.snapshot(ctx)
	if err != nil {
		return usage{}, err
	}
	if err := sleep(ctx, d); err != nil {
		return usage{}, err
	}
	b, err := m.snapshot(ctx)
	if err != nil {
		return usage{}, err
	}
	return between(a, b), nil
}

func (m *measurement) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	var err error
	if s.requests, err = controlplane.Requests(ctx, m.env.Client); err != nil {
		return s, err
	}
	s.at = time.Now()
	if s.machine, err = machineBusy(); err != nil {
		return s, err
	}
	if s.api, err = cpuSeconds(m.apiPID); err != nil {
		return s, fmt.Errorf("kube-apiserver: %w", err)
	}
	if s.etcd, err = cpuSeconds(m.etcdPID); err != nil {
		return s, fmt.Errorf("etcd: %w", err)
	}
	for _, p := range m.electors {
		cpu, err := cpuSeconds(p.Cmd.Process.Pid)
		if err != nil {
			return s, fmt.Errorf("elector %s: %w", p.id, err)
		}
		s.electorsCPU += cpu
	}
	return s, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
}
