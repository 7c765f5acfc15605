package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// TestDemo runs the demo the way `make demo` does, through the handover and
// the rollout, and checks that it went through the webhook and the RBAC and
// handed over. Then, as the person watching would, it deletes the leader's
// pod (one the rollout made) with the kubeconfig the demo printed, and
// checks that the live table follows: the new leader within a bound of the
// lease saying so, then the deleted pod's row gone and its replacement's
// elector followed. Last it stops the demo as Ctrl-C does, by ending its
// context, and checks that it said goodbye, returned no error, and left no
// process behind: none of the electors and the injector, and none of the
// control plane (etcd, kube-apiserver, kube-controller-manager) it started.
func TestDemo(t *testing.T) {
	assets, err := controlplane.Assets()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, name := range []string{"elector", "injector"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "github.com/vapor-ware/k8s-elector/cmd/"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	// The binaries the demo runs, by their resolved path, as /proc shows
	// them.
	known := map[string]string{}
	for dir, names := range map[string][]string{
		assets: {"etcd", "kube-apiserver", "kube-controller-manager"},
		bin:    {"elector", "injector"},
	} {
		for _, name := range names {
			path, err := filepath.EvalSymlinks(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			known[path] = name
		}
	}
	// Which of them were seen running: proof that the scan below would find
	// them if they were left behind.
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	scanDone := make(chan struct{})
	stopScan := make(chan struct{})
	go func() {
		defer close(scanDone)
		for {
			for _, c := range children() {
				if name, ok := known[c.exe]; ok {
					mu.Lock()
					seen[name] = true
					mu.Unlock()
				}
			}
			select {
			case <-stopScan:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	// interrupt ends the demo's context, as the signal handler of
	// hack/demo/cmd does on Ctrl-C.
	ctx, interrupt := context.WithTimeout(context.Background(), 4*time.Minute)
	defer interrupt()
	out := &recorder{}
	var runErr error
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		runErr = Run(ctx, Options{Root: "../..", Bin: bin}, out)
	}()
	defer func() {
		// On a failure too: nothing the demo started may outlive the test.
		interrupt()
		<-ran
		t.Log("\n" + out.String())
	}()

	if err := out.waitFor(ran, &runErr, "that was the script", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`the injector added "elector" (native sidecar)`,
		"as service account demo/default",
		"IS_LEADER",
		"kubeconfig of the local control plane",
		"handover: ",
		"rollout done in ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output has no %q", want)
		}
	}
	// The sample Deployment rolls with the default 25% / 25%: the newest
	// pod is named successor, so leadership moves once, to a new pod.
	if m := rolloutDone.FindStringSubmatch(out.String()); m == nil {
		t.Errorf("the demo's output says no rollout was done")
	} else if m[1] != "1" {
		t.Errorf("the rollout changed leader %s times, want once", m[1])
	}

	checkLive(t, out)

	interrupt()
	select {
	case <-ran:
		if runErr != nil {
			t.Errorf("the demo, interrupted, returned %v; want nil (exit status 0)", runErr)
		}
	case <-time.After(time.Minute):
		t.Fatal("the demo did not stop within a minute of its interrupt")
	}
	close(stopScan)
	<-scanDone
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "goodbye") {
		t.Errorf("the demo's last line is %q, not its goodbye", last)
	}
	for _, name := range known {
		if !seen[name] {
			t.Errorf("no %s process of the demo was seen while it ran (seen: %v)", name, seen)
		}
	}
	for _, c := range children() {
		if name, ok := known[c.exe]; ok {
			t.Errorf("%s left behind: pid %d (%s)", name, c.pid, c.exe)
		}
	}
	if pids := controlplane.Processes(os.TempDir() + "/k8s-elector-demo-"); len(pids) > 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

// checkLive deletes the leader's pod with the demo's kubeconfig, and checks
// that the table shows the new leader within tableLag of the Lease saying
// so, then, within a minute, the deleted pod gone and the pod that
// replaced it followed.
func checkLive(t *testing.T, out *recorder) {
	t.Helper()
	const tableLag = 3 * time.Second
	m := kubeconfigLine.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("the demo printed no kubeconfig")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", m[1])
	if err != nil {
		t.Fatalf("the demo's kubeconfig: %v", err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leases := client.CoordinationV1().Leases("demo")
	lease, err := leases.Get(ctx, "example", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := holderOf(lease)
	before := out.lastTable()
	if before == nil || before.leader() != old || len(before.rows) != 3 {
		t.Fatalf("the table before the deletion is not 3 electors that %s leads:\n%s", old, before)
	}
	// The leader's address is written just after it leads: the table
	// shows it within tableLag.
	for deadline := time.Now().Add(tableLag); before.endpoint() != old; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no table within %s shows the leader %s as Service %s's endpoint; the last:\n%s", tableLag, old, sampleService, before)
		}
		before = out.lastTable()
	}
	w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=example", ResourceVersion: lease.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	deleted := time.Now()
	if err := client.CoreV1().Pods("demo").Delete(ctx, old, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var next string
	var held time.Time
	for ev := range w.ResultChan() {
		if l, ok := ev.Object.(*coordinationv1.Lease); ok && holderOf(l) != "" && holderOf(l) != old {
			next, held = holderOf(l), time.Now()
			break
		}
	}
	if next == "" {
		t.Fatalf("no new holder of the lease within %s of deleting %s", time.Since(deleted).Round(time.Millisecond), old)
	}
	shown, ok := out.waitForTable(deleted, held.Add(tableLag), func(tb *table) bool { return tb.leader() == next && tb.endpoint() == next })
	if !ok {
		t.Fatalf("the lease was held by %s %s after %s was deleted, and no table showed it leading, and the Service's endpoint, within %s; the last:\n%s",
			next, held.Sub(deleted).Round(time.Millisecond), old, tableLag, out.lastTable())
	}
	t.Logf("%s was deleted; the lease was held by %s after %s, the table showed it after %s",
		old, next, held.Sub(deleted).Round(time.Millisecond), shown.Sub(deleted).Round(time.Millisecond))
	// The replacement is a pod the table had no row for; its elector is
	// followed once it answers.
	isNew := func(r map[string]string) bool {
		return !slices.ContainsFunc(before.rows, func(b map[string]string) bool { return b["POD"] == r["POD"] })
	}
	_, ok = out.waitForTable(deleted, time.Now().Add(time.Minute), func(tb *table) bool {
		if len(tb.rows) != 3 || tb.leader() != next || !slices.ContainsFunc(tb.rows, isNew) {
			return false
		}
		for _, r := range tb.rows {
			if r["POD"] == old || r["LEADER"] != next || r["IS_LEADER"] == "" {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("within a minute of deleting %s, no table showed its replacement following %s; the last:\n%s", old, next, out.lastTable())
	}
}

var kubeconfigLine = regexp.MustCompile(`kubeconfig of the local control plane, while the demo runs: (\S+)`)

// recorder is the demo's output, each write with its time.
type recorder struct {
	mu     sync.Mutex
	writes []written
}

type written struct {
	at   time.Time
	text string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, written{time.Now(), string(p)})
	return len(p), nil
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, w := range r.writes {
		b.WriteString(w.text)
	}
	return b.String()
}

// waitFor waits for text in the output, and fails if the demo ends first.
func (r *recorder) waitFor(ran <-chan struct{}, err *error, text string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(r.String(), text) {
		select {
		case <-ran:
			return fmt.Errorf("the demo ended (error: %v) before it printed %q", *err, text)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the demo did not print %q within %s", text, timeout)
		}
	}
	return nil
}

// tables are the tables written, in order, with their times: the demo
// writes each one in one write, as it does to anything but a terminal.
func (r *recorder) tables() ([]*table, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var tables []*table
	var times []time.Time
	for _, w := range r.writes {
		if tb := parseTable(w.text); tb != nil {
			tables, times = append(tables, tb), append(times, w.at)
		}
	}
	return tables, times
}

func (r *recorder) lastTable() *table {
	tables, _ := r.tables()
	if len(tables) == 0 {
		return nil
	}
	return tables[len(tables)-1]
}

// waitForTable waits until deadline for a table written after since that
// ok accepts, and returns when it was written.
func (r *recorder) waitForTable(since, deadline time.Time, ok func(*table) bool) (time.Time, bool) {
	for {
		tables, times := r.tables()
		for i, tb := range tables {
			if times[i].After(since) && !times[i].After(deadline) && ok(tb) {
				return times[i], true
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// table is one table of electors, each row by column name.
type table struct {
	text string
	rows []map[string]string
}

func (tb *table) String() string {
	if tb == nil {
		return "(none)"
	}
	return tb.text
}

// leader is the pod whose elector alone says it leads, "" if none or more.
func (tb *table) leader() string {
	var leaders []string
	for _, r := range tb.rows {
		if r["IS_LEADER"] == "true" {
			leaders = append(leaders, r["POD"])
		}
	}
	if len(leaders) != 1 {
		return ""
	}
	return leaders[0]
}

// endpoint is the pod the table shows as the Service's endpoint, "" if
// none or more.
func (tb *table) endpoint() string {
	var pods []string
	for _, r := range tb.rows {
		if strings.HasPrefix(r["SERVICE "+sampleService], "endpoint ") {
			pods = append(pods, r["POD"])
		}
	}
	if len(pods) != 1 {
		return ""
	}
	return pods[0]
}

// parseTable reads a table by the columns of its header; cells may be
// empty.
func parseTable(text string) *table {
	lines := strings.Split(strings.Trim(text, "\n"), "\n")
	if !strings.HasPrefix(lines[0], "POD ") {
		return nil
	}
	header := lines[0]
	names := []string{"POD", "ELECTOR", "IS_LEADER", "LEADER", "EPOCH", "SERVICE " + sampleService}
	// Each name is looked for after the one before: LEADER is also the end
	// of IS_LEADER.
	starts := make([]int, len(names))
	from := 0
	for i, name := range names {
		at := strings.Index(header[from:], name)
		if at < 0 {
			return nil
		}
		starts[i], from = from+at, from+at+len(name)
	}
	tb := &table{text: text}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for i, name := range names {
			end := len(line)
			if i+1 < len(names) {
				end = min(end, starts[i+1])
			}
			if starts[i] < end {
				row[name] = strings.TrimSpace(line[starts[i]:end])
			}
		}
		tb.rows = append(tb.rows, row)
	}
	return tb
}

var rolloutDone = regexp.MustCompile(`rollout done in \S+: (\d+) leader change`)

type child struct {
	pid int
	exe string
}

// children lists the live child processes of this test process: those the
// demo started, whatever their command line.
func children() []child {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []child
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so read after
		// the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", entry.Name(), "exe"))
		if err != nil {
			continue
		}
		out = append(out, child{pid: pid, exe: exe})
	}
	return out
}
