package prometheus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestMetricsExported runs the elector and the injector against the local
// control plane, as a cluster would, and scrapes them: every metric that an
// alert or a panel names must be among what they export. The elector leads
// and renews, with an application health check; the injector answers an
// admission request from the API server. The one series no process
// exports, up, is Prometheus's own: it must name the injector's job.
func TestMetricsExported(t *testing.T) {
	objs := render(t, true)
	wanted := map[string][]string{} // metric name: where it is used
	for _, q := range queries(t) {
		parser.Inspect(q.expr, func(node parser.Node, _ []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%s selects series without naming a metric: %s", q.where, vs)
				return nil
			}
			if name == "up" {
				job := injectorMetricsService(t, objs)
				if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
					return m.Name == "job" && m.Type == labels.MatchEqual && m.Value == job
				}) {
					t.Errorf("%s: %s: up must select the injector's job, named after its metrics Service: job=%q", q.where, vs, job)
				}
				return nil
			}
			wanted[name] = append(wanted[name], q.where)
			return nil
		})
	}
	if t.Failed() {
		return
	}

	env, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	bin := t.TempDir()
	for _, name := range []string{"elector", "injector"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name)
		build.Dir = "../.."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}

	elector := scrape(t, electorMetrics(t, env, bin))
	injector := scrape(t, injectorMetrics(t, env, bin))
	for _, name := range slices.Sorted(maps.Keys(wanted)) {
		if !exported(elector, name) && !exported(injector, name) {
			t.Errorf("%s is exported by neither the elector nor the injector; used by %s", name, strings.Join(slices.Compact(wanted[name]), ", "))
		}
	}
	if len(wanted) < 5 {
		t.Errorf("the alerts and panels name only %v", wanted)
	}
}

// exported reports whether families has the series name: a family of that
// name, or one of a histogram's (_bucket, _sum, _count) or a summary's
// (_sum, _count).
func exported(families map[string]*dto.MetricFamily, name string) bool {
	if families[name] != nil {
		return true
	}
	for suffix, types := range map[string][]dto.MetricType{
		"_bucket": {dto.MetricType_HISTOGRAM},
		"_sum":    {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
		"_count":  {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
	} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil && slices.Contains(types, families[base].GetType()) {
			return true
		}
	}
	return false
}

// scrape is a snapshot of what a scrape of url finds: its families, each
// with a sample at least (a family declared without one is not exported).
type snapshot = map[string]*dto.MetricFamily

func scrape(t *testing.T, get func() (snapshot, error)) snapshot {
	t.Helper()
	families, err := get()
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// fetch scrapes url as Prometheus would.
func fetch(url string) (snapshot, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	text := expfmt.NewTextParser(model.UTF8Validation)
	return text.TextToMetricFamilies(resp.Body)
}

// electorMetrics starts an elector that leads its election and renews, with
// an application health check, and returns what scraping it finds once it
// has renewed.
func electorMetrics(t *testing.T, env *controlplane.Env, bin string) func() (snapshot, error) {
	ns := env.Namespace(t)
	admin, err := env.Env.AddUser(envtest.User{Name: "prometheus-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(app.Close)
	port := freePort(t)
	start(t, "elector", filepath.Join(bin, "elector"),
		"-election=metrics", "-namespace="+ns, "-id=a", "-kubeconfig="+kubeconfig,
		fmt.Sprintf("-http=127.0.0.1:%d", port), "-ttl=2s",
		"-app-health-url="+app.URL, "-app-health-period=100ms")
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	return func() (snapshot, error) {
		return poll(30*time.Second, func() (snapshot, error) {
			families, err := fetch(url)
			if err != nil {
				return nil, err
			}
			if v := value(families, "elector_is_leader", ""); v != 1 {
				return nil, fmt.Errorf("elector_is_leader = %v, want 1", v)
			}
			if n := families["elector_renew_duration_seconds"]; n == nil || !slices.ContainsFunc(n.GetMetric(), func(m *dto.Metric) bool { return m.GetHistogram().GetSampleCount() > 0 }) {
				return nil, errors.New("no renewal yet")
			}
			return families, nil
		})
	}
}

// injectorMetrics starts the injector as config/default's Deployment runs
// it, under its own service account, with its webhook called by the API
// server, and returns what scraping its metrics finds once it has answered
// an admission request.
func injectorMetrics(t *testing.T, env *controlplane.Env, bin string) func() (snapshot, error) {
	ctx := context.Background()
	metricsPort := freePort(t)
	inj, err := env.StartInjector(ctx, controlplane.InjectorOptions{
		Bin: filepath.Join(bin, "injector"), Dir: t.TempDir(), Objs: render(t, false),
		Flags: map[string]string{"-metrics-bind-address": fmt.Sprintf("127.0.0.1:%d", metricsPort)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inj.Stop(); err != nil {
			t.Error(err)
		}
	})

	return func() (snapshot, error) {
		// An annotated pod, created once the webhook serves: the API server
		// calls the injector.
		ns := env.Namespace(t)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}
		if _, err := env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		var injected *corev1.Pod
		if _, err := poll(60*time.Second, func() (snapshot, error) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Annotations: map[string]string{webhook.AnnotationElection: "metrics"}},
				Spec: corev1.PodSpec{
					ServiceAccountName: "app",
					Containers:         []corev1.Container{{Name: "app", Image: "example.com/app:v1"}},
				},
			}
			injected, err = env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			return nil, err
		}); err != nil {
			return nil, fmt.Errorf("no pod created through the injector: %w", err)
		}
		if injected.Labels[webhook.LabelInjected] != "true" {
			return nil, fmt.Errorf("the pod was created without the injector: labels %v", injected.Labels)
		}
		return poll(30*time.Second, func() (snapshot, error) {
			families, err := fetch(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
			if err != nil {
				return nil, err
			}
			if families["controller_runtime_webhook_latency_seconds"] == nil {
				return nil, errors.New("no admission request counted yet")
			}
			return families, nil
		})
	}
}

// value is the value of the sample of name whose labels print as labels.
func value(families snapshot, name, labels string) float64 {
	for _, m := range families[name].GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(ls, ",") == labels {
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// start runs a process until the test ends, then stops it with SIGTERM
// (SIGKILL after 45 s); its output is logged if the test fails.
func start(t *testing.T, name, path string, args ...string) {
	t.Helper()
	var out strings.Builder // written until Stop returns
	p, err := controlplane.Run(exec.Command(path, args...), &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(syscall.SIGTERM, 45*time.Second)
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, out.String())
		}
	})
}

// poll calls f until it succeeds or d has passed, and returns its last
// answer.
func poll(d time.Duration, f func() (snapshot, error)) (snapshot, error) {
	deadline := time.Now().Add(d)
	for {
		s, err := f()
		if err == nil || time.Now().After(deadline) {
			return s, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
