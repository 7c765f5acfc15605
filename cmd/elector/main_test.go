package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/vapor-ware/k8s-elector/internal/cli"
)

// TestBadInput checks that every command line that cannot work exits 2
// with one line naming the flag and the fix, and no stack trace.
func TestBadInput(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\ncurrent-context: c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy := listenBusy(t)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"missing election", []string{"-kubeconfig=" + kubeconfig}, nil, "-election: is required"},
		{"bad election name", []string{"-election=My_App", "-kubeconfig=" + kubeconfig}, nil, `-election: "My_App" is not a valid Kubernetes object name`},
		{"unknown lock type", []string{"-election=a", "-lock-type=etcd", "-kubeconfig=" + kubeconfig}, nil, `-lock-type: "etcd" is not a lock type (valid: leases, configmaps, endpoints)`},
		{"ttl under 2s", []string{"-election=a", "-ttl=1s", "-kubeconfig=" + kubeconfig}, nil, "elector: -ttl: 1s is under the minimum 2s (example: 10s)\n"},
		{"renew deadline not under ttl", []string{"-election=a", "-ttl=10s", "-renew-deadline=10s", "-kubeconfig=" + kubeconfig}, nil, "elector: -renew-deadline: 10s must be shorter than -ttl 10s (example: 3.333s)\n"},
		{"retry period too long", []string{"-election=a", "-ttl=10s", "-renew-deadline=3s", "-retry-period=3s", "-kubeconfig=" + kubeconfig}, nil, "-renew-deadline: 3s must be more than 1.2 x the longer of -retry-period 3s and 1s, the precision at which followers see a renewal (example: -renew-deadline=3.333s -retry-period=1.667s)"},
		{"renew deadline within a second", []string{"-election=a", "-ttl=3s", "-renew-deadline=1s", "-retry-period=200ms", "-kubeconfig=" + kubeconfig}, nil, "the precision at which followers see a renewal"},
		{"bad duration", []string{"-election=a", "-ttl=ten"}, nil, `invalid value "ten" for flag -ttl`},
		{"bad http address", []string{"-election=a", "-http=nonsense", "-kubeconfig=" + kubeconfig}, nil, `-http: "nonsense" is not a host:port address`},
		{"http address in use", []string{"-election=a", "-http=" + busy, "-kubeconfig=" + kubeconfig}, nil, "-http: cannot listen on"},
		{"kubeconfig missing", []string{"-election=a", "-kubeconfig=/no/such/file"}, nil, "-kubeconfig: stat /no/such/file: no such file or directory"},
		{"not in a cluster", []string{"-election=a"}, nil, "-kubeconfig: not set, and not running in a cluster"},
		{"bad env value", []string{"-kubeconfig=" + kubeconfig}, map[string]string{"ELECTOR_ELECTION": "a", "ELECTOR_TTL": "x"}, `ELECTOR_TTL: "x": parse error`},
		{"env election bad", []string{"-kubeconfig=" + kubeconfig}, map[string]string{"ELECTOR_ELECTION": "-x"}, `-election: "-x" is not a valid Kubernetes object name`},
		{"pod label without pod name", []string{"-election=a", "-pod-label=role", "-kubeconfig=" + kubeconfig}, nil, "-pod-label: needs the pod's name"},
		{"leader service not a name", []string{"-election=a", "-leader-service=my.svc", "-pod-name=p", "-pod-ip=10.0.0.1", "-kubeconfig=" + kubeconfig}, nil, `-leader-service: "my.svc" is not a Service name`},
		{"leader service without pod name", []string{"-election=a", "-leader-service=leader", "-pod-ip=10.0.0.1", "-kubeconfig=" + kubeconfig}, nil, "-leader-service: needs the pod's name"},
		{"leader service without pod IP", []string{"-election=a", "-leader-service=leader", "-pod-name=p", "-kubeconfig=" + kubeconfig}, nil, "-pod-ip: is required by -leader-service: set $POD_IP from the downward API (status.podIP)"},
		{"leader service with a bad pod IP", []string{"-election=a", "-leader-service=leader", "-pod-name=p", "-kubeconfig=" + kubeconfig}, map[string]string{"POD_IP": "pod"}, `-pod-ip: "pod" is not an IP address`},
		{"bad log format", []string{"-election=a", "-log-format=xml", "-kubeconfig=" + kubeconfig}, nil, `-log-format: "xml" is not a log format`},
		{"bad app health URL", []string{"-election=a", "-app-health-url=localhost:8080", "-kubeconfig=" + kubeconfig}, nil, `-app-health-url: "localhost:8080" is not an http or https URL (example: http://localhost:8080/healthz)`},
		{"app health period too short", []string{"-election=a", "-app-health-url=http://localhost:8080/", "-app-health-period=10ms", "-kubeconfig=" + kubeconfig}, nil, `-app-health-period: 10ms is under the minimum 100ms`},
		{"app health threshold 0", []string{"-election=a", "-app-health-threshold=0", "-kubeconfig=" + kubeconfig}, nil, `-app-health-threshold: 0 must be at least 1`},
		{"bad notify URL", []string{"-election=a", "-notify-url=localhost:8080/elector", "-kubeconfig=" + kubeconfig}, nil, `-notify-url: "localhost:8080/elector" is not an http or https URL (example: http://localhost:8080/elector)`},
		{"bad notify URL from env", []string{"-election=a", "-kubeconfig=" + kubeconfig}, map[string]string{"ELECTOR_NOTIFY_URL": "ftp://app/x"}, `-notify-url: "ftp://app/x" is not an http or https URL`},
		{"stray argument", []string{"-election=a", "extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			t.Setenv("POD_NAME", "")
			t.Setenv("POD_IP", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			code := run(tt.args, &stderr)
			out := stderr.String()
			if code != cli.ExitUsage {
				t.Errorf("exit status = %d, want %d; output:\n%s", code, cli.ExitUsage, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output = %q, want it to contain %q", out, tt.want)
			}
			if strings.Contains(out, "goroutine ") || strings.Count(strings.TrimSpace(out), "\n") > 0 && !strings.Contains(out, "Usage of elector") {
				t.Errorf("want one line, got:\n%s", out)
			}
		})
	}
}

func TestEnvironmentDefaults(t *testing.T) {
	t.Setenv("POD_NAME", "pod-1")
	t.Setenv("POD_NAMESPACE", "team")
	t.Setenv("ELECTOR_ELECTION", "from-env")
	t.Setenv("ELECTOR_LOCK_TYPE", "configmaps")
	t.Setenv("ELECTOR_NOTIFY_URL", "http://localhost:8080/elector")
	o, err := parse([]string{"-lock-type=endpoints", "-ttl=15s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.NotifyURL != "http://localhost:8080/elector" {
		t.Errorf("notify URL = %q, want ELECTOR_NOTIFY_URL's", c.NotifyURL)
	}
	if c.Election != "from-env" || c.ID != "pod-1" || c.PodName != "pod-1" || c.Namespace != "team" {
		t.Errorf("defaults from the environment: %+v", c)
	}
	if c.LockType != "endpoints" {
		t.Errorf("lock type = %s: the command line must win over ELECTOR_LOCK_TYPE", c.LockType)
	}
	if c.RenewDeadline != 5e9 || c.RetryPeriod != 2500e6 {
		t.Errorf("timings from -ttl=15s: renew %s retry %s, want ttl/3 and ttl/6", c.RenewDeadline, c.RetryPeriod)
	}

	t.Setenv("POD_NAMESPACE", "")
	o, err = parse([]string{"-election=x", "-namespace=explicit"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Namespace != "explicit" {
		t.Errorf("namespace = %s, want the flag's", o.cfg.Namespace)
	}
}

// TestUpstreamCommandLines checks that manifests written for upstream
// k8s-elector keep working: its klog flags are accepted (with one warning
// line) and $ELECTOR_POD_NAME keeps its pod label.
func TestUpstreamCommandLines(t *testing.T) {
	t.Setenv("POD_NAME", "")
	var stderr bytes.Buffer
	args := []string{"-election=a", "-logtostderr", "-alsologtostderr=false", "-v=2", "-stderrthreshold=INFO",
		"-log_dir=/tmp", "-log_file=x.log", "-log_file_max_size=1800", "-vmodule=foo=2", "-skip_headers",
		"-skip_log_headers", "-add_dir_header", "-one_output", "-log_backtrace_at=:0"}
	o, err := parse(args, &stderr)
	if err != nil {
		t.Fatalf("upstream's klog flags: %v", err)
	}
	if o.verbosity != 2 {
		t.Errorf("-v = %d, want 2", o.verbosity)
	}
	if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.Contains(stderr.String(), "ignoring klog flags") {
		t.Errorf("want one warning line, got:\n%s", stderr.String())
	}
	if o.cfg.PodLabel != "" {
		t.Errorf("pod label %q without $ELECTOR_POD_NAME", o.cfg.PodLabel)
	}

	t.Setenv("ELECTOR_POD_NAME", "web-0")
	o, err = parse([]string{"-election=a"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.PodLabel != "k8s-elector/status" || o.cfg.PodName != "web-0" {
		t.Errorf("with $ELECTOR_POD_NAME: pod label %q on pod %q, want k8s-elector/status on web-0", o.cfg.PodLabel, o.cfg.PodName)
	}
	o, err = parse([]string{"-election=a", "-pod-label=example.com/role"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.PodLabel != "example.com/role" {
		t.Errorf("-pod-label must win over upstream's label, got %q", o.cfg.PodLabel)
	}
}

func TestHelpListsFlags(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, &out); code != 0 {
		t.Fatalf("-h exit status %d", code)
	}
	for _, f := range []string{"-election", "-http", "-id", "-kubeconfig", "-lock-type", "-namespace", "-ttl", "-renew-deadline", "-retry-period", "-pod-label", "-pod-name", "-log-format", "-v", "-version", "ELECTOR_"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("-h does not mention %s", f)
		}
	}
}

// listenBusy holds a port for the test and returns its address.
func listenBusy(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// TestREADMEFlags keeps the README's flag reference equal to -h.
func TestREADMEFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- BEGIN elector -h (checked by cmd/elector's tests) -->\n```\n")
	block, _, ok2 := strings.Cut(block, "```\n<!-- END elector -h -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no elector -h block")
	}
	var out bytes.Buffer
	run([]string{"-h"}, &out)
	if got := out.String(); strings.TrimSpace(got) != strings.TrimSpace(block) {
		t.Errorf("README.md's flag reference differs from -h; paste this into it:\n%s", got)
	}
}

// TestSmallDependencies keeps the elector binary small: no typed clientset
// (every API group's scheme), no controller-runtime, no client-go leader
// election (which needs the typed clients), no Prometheus client library.
func TestSmallDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, banned := range []string{
		"k8s.io/client-go/kubernetes",
		"k8s.io/client-go/tools/leaderelection",
		// Its generated code is a fifth of the binary: pkg/election declares
		// the core objects it uses (ConfigMap, Endpoints, Pod, Event,
		// Service).
		"k8s.io/api/core/v1",
		"sigs.k8s.io/controller-runtime",
		"github.com/prometheus/client_golang",
	} {
		for pkg := range strings.SplitSeq(string(out), "\n") {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("the elector imports %s", pkg)
			}
		}
	}
}

// TestSetGCPercent checks that the elector collects at gcPercent by default
// and leaves a GOGC from the environment in force.
func TestSetGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(name string) (string, bool) {
			v, ok := vars[name]
			return v, ok
		}
	}
	current := func() int {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}

	setGCPercent(env(nil))
	if got := current(); got != gcPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	// The runtime reads $GOGC at start; a value set then stays in force.
	debug.SetGCPercent(200)
	setGCPercent(env(map[string]string{"GOGC": "200"}))
	if got := current(); got != 200 {
		t.Errorf("GOGC=200: GC percent %d, want 200", got)
	}
}
