// Command injector measures the injector on the local control plane and
// prints each figure beside its goal: what the webhook adds to creating a
// pod, whether it keeps up with a burst of creates, and its memory in a
// cluster full of pods. The injector runs as config/default deploys it (its
// Deployment's args, service account, RBAC and webhook configuration), as a
// local process reached by URL. Run it with `make bench`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vapor-ware/k8s-elector/hack/render"
	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

const (
	benchNamespace = "bench"
	benchAccount   = "app" // the app pods' service account
)

func main() {
	bin := flag.String("injector", "bin/injector", "the injector binary to measure (built as the image builds it)")
	root := flag.String("root", ".", "the repository, whose config/default is installed")
	pairs := flag.Int("pairs", 200, "pods created one at a time with and without the webhook, interleaved")
	burst := flag.Int("burst", 500, "annotated pods created all at once")
	plain := flag.Int("plain-pods", 10000, "unannotated pods in the cluster when the injector's memory is read")
	injected := flag.Int("injected-pods", 1000, "injected pods in the cluster when the injector's memory is read")
	workers := flag.Int("workers", 32, "concurrent creates while filling the cluster")
	flag.Parse()
	b := &bench{bin: *bin, root: *root}
	if err := b.run(*pairs, *burst, *plain, *injected, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "bench/injector:", err)
		os.Exit(1)
	}
}

type row struct{ name, value, goal, verdict string }

type bench struct {
	bin, root string
	dir       string
	env       *controlplane.Env
	client    kubernetes.Interface
	injector  *controlplane.Injector
	// metricsPort serves the injector's /metrics.
	metricsPort int

	// Pods created so far, to fill the cluster up to the counts asked.
	plainPods, injectedPods atomic.Int64
	seq                     atomic.Int64
}

func (b *bench) run(pairs, burst, plain, injected, workers int) (err error) {
	b.dir, err = os.MkdirTemp("", "injector-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)

	say("starting the local control plane")
	b.env, err = controlplane.Start(controlplane.Options{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.env.Stop()) }()
	// The measurements are of the API server and the injector, not of
	// client-go's default rate limit of 5 requests a second.
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = 5000, 5000
	if b.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}

	ctx := context.Background()
	if err := b.startInjector(ctx); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.injector.Stop()) }()
	idle, err := b.rss()
	if err != nil {
		return err
	}

	var rows []row
	say("creating %d pods with and %d without the webhook, one at a time, interleaved", pairs, pairs)
	with, without, err := b.sequential(ctx, pairs)
	if err != nil {
		return err
	}
	extra := with - without
	rows = append(rows,
		row{"create an annotated pod (webhook), median", ms(with), "", ""},
		row{"create an unannotated pod (not sent), median", ms(without), "", ""},
		row{"extra latency of the webhook, median", ms(extra), "< 5 ms", verdict(extra < 5*time.Millisecond)},
	)

	say("creating %d annotated pods at once", burst)
	failures, wall, err := b.burst(ctx, burst)
	if err != nil {
		return err
	}
	rows = append(rows,
		row{fmt.Sprintf("%d concurrent annotated creates: failures", burst), strconv.Itoa(failures), "0", verdict(failures == 0)},
		row{fmt.Sprintf("%d concurrent annotated creates: wall time", burst), ms(wall), "", ""},
	)

	say("filling the cluster to %d unannotated and %d injected pods (%d workers)", plain, injected, workers)
	if err := b.fill(ctx, plain, injected, workers); err != nil {
		return err
	}
	nPlain, nInjected, err := b.count(ctx)
	if err != nil {
		return err
	}
	say("the cluster holds %d unannotated and %d injected pods; reading the injector's memory for 15s", nPlain, nInjected)
	// The reconciler has a namespace of 1,000 pods to work through, and the
	// garbage of the fill to collect: the highest reading of a quiet 15s.
	var rss int64
	for range 15 {
		time.Sleep(time.Second)
		r, err := b.rss()
		if err != nil {
			return err
		}
		rss = max(rss, r)
	}
	peak, err := b.procStatus("VmHWM:")
	if err != nil {
		return err
	}
	// How much of the RSS is live Go heap, and how much the collector's
	// headroom and the runtime's: where to look if the goal is missed.
	heap, err := b.metric("go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}
	rows = append(rows,
		row{"injector RSS, idle", mib(idle), "", ""},
		row{fmt.Sprintf("injector RSS, %d unannotated + %d injected pods", nPlain, nInjected), mib(rss), "< 64 MiB", verdict(rss < 64<<20)},
		row{"injector RSS, peak over the run (VmHWM)", mib(peak), "", ""},
		row{"injector Go heap in use, then (go_memstats_heap_inuse_bytes)", mib(int64(heap)), "", ""},
	)
	select {
	case <-b.injector.Done():
		return fmt.Errorf("the injector exited during the run; its log ends:\n%s", b.injector.Tail(20))
	default:
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MEASURE\tVALUE\tGOAL\tMET")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.name, r.value, r.goal, r.verdict)
	}
	return w.Flush()
}

// startInjector installs config/default and runs the injector as its
// Deployment would (controlplane.StartInjector), with its metrics served
// for the run to read.
func (b *bench) startInjector(ctx context.Context) error {
	var err error
	if b.metricsPort, err = controlplane.FreePort(); err != nil {
		return err
	}
	rendered, err := render.Render(filepath.Join(b.root, "config/default"), "", "")
	if err != nil {
		return err
	}
	objs, err := controlplane.Decode([]byte(rendered))
	if err != nil {
		return err
	}
	b.injector, err = b.env.StartInjector(ctx, controlplane.InjectorOptions{
		Bin: b.bin, Dir: b.dir, Objs: objs,
		Flags: map[string]string{"-metrics-bind-address": fmt.Sprintf("127.0.0.1:%d", b.metricsPort)},
	})
	if err != nil {
		return err
	}
	say("started the injector (pid %d): %s", b.injector.Cmd.Process.Pid, strings.Join(b.injector.Args, " "))

	// Ready, and the API server trusts its certificate: an annotated pod
	// comes back injected.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: benchAccount, Namespace: benchNamespace}}
	if _, err := b.client.CoreV1().ServiceAccounts(benchNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := b.create(ctx, true)
		if err == nil {
			return nil
		}
		select {
		case <-b.injector.Done():
			return fmt.Errorf("the injector exited; its log ends:\n%s", b.injector.Tail(20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no pod injected within 60s: %w; the injector's log ends:\n%s", err, b.injector.Tail(20))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// pod is a small app pod. The annotated one asks for an elector; the other
// carries an annotation of the same size that the webhook's matchConditions
// do not send, so the two differ only by the webhook.
func (b *bench) pod(annotated bool) *corev1.Pod {
	key := "example.vapor.io/election"
	if annotated {
		key = webhook.AnnotationElection
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("app-%d", b.seq.Add(1)),
			Namespace:   benchNamespace,
			Labels:      map[string]string{"app": "bench"},
			Annotations: map[string]string{key: "bench"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: benchAccount,
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.k8s.io/pause:3.10",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
	}
}

// create creates one pod and checks that it was injected if and only if
// it asked to be.
func (b *bench) create(ctx context.Context, annotated bool) (time.Duration, error) {
	pod := b.pod(annotated)
	start := time.Now()
	got, err := b.client.CoreV1().Pods(benchNamespace).Create(ctx, pod, metav1.CreateOptions{})
	took := time.Since(start)
	if err != nil {
		return took, err
	}
	if is := got.Labels[webhook.LabelInjected] == "true"; is != annotated {
		return took, fmt.Errorf("pod %s: injected = %v, want %v", got.Name, is, annotated)
	}
	if annotated {
		b.injectedPods.Add(1)
	} else {
		b.plainPods.Add(1)
	}
	return took, nil
}

// sequential creates n pods of each kind, alternating, after a warm-up,
// and returns the median time of each.
func (b *bench) sequential(ctx context.Context, n int) (with, without time.Duration, err error) {
	var ws, wos []time.Duration
	for i := range n + 20 {
		w, err := b.create(ctx, true)
		if err != nil {
			return 0, 0, err
		}
		wo, err := b.create(ctx, false)
		if err != nil {
			return 0, 0, err
		}
		// The first creates open connections and warm caches.
		if i >= 20 {
			ws, wos = append(ws, w), append(wos, wo)
		}
	}
	slices.Sort(ws)
	slices.Sort(wos)
	return ws[len(ws)/2], wos[len(wos)/2], nil
}

// burst creates n annotated pods at once and returns how many failed and
// how long all took.
func (b *bench) burst(ctx context.Context, n int) (int, time.Duration, error) {
	var failures atomic.Int64
	var first sync.Once
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-release
			if _, err := b.create(ctx, true); err != nil {
				failures.Add(1)
				first.Do(func() { say("first failure: %v", err) })
			}
		})
	}
	start := time.Now()
	close(release)
	wg.Wait()
	return int(failures.Load()), time.Since(start), nil
}

// fill creates pods with a pool of workers until the cluster holds plain
// unannotated and injected injected pods, the injected ones spread among
// the others.
func (b *bench) fill(ctx context.Context, plain, injected, workers int) error {
	needPlain := max(0, plain-int(b.plainPods.Load()))
	needInjected := max(0, injected-int(b.injectedPods.Load()))
	total := needPlain + needInjected
	jobs := make(chan bool)
	go func() {
		defer close(jobs)
		for i := range total {
			// Injected ones at an even spacing: i*needInjected/total steps
			// up needInjected times over the run.
			annotated := needInjected > 0 && (i+1)*needInjected/total != i*needInjected/total
			jobs <- annotated
		}
	}()
	var errs atomic.Int64
	var firstErr error
	var once sync.Once
	var made atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for annotated := range jobs {
				if _, err := b.create(ctx, annotated); err != nil {
					errs.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				if m := made.Add(1); m%2000 == 0 {
					say("%d/%d pods created (%.0f/s)", m, total, float64(m)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	if n := errs.Load(); n > 0 {
		return fmt.Errorf("%d of %d creates failed, the first: %w", n, total, firstErr)
	}
	return nil
}

// count lists the namespace's pods, to report what the cluster holds
// rather than what was asked.
func (b *bench) count(ctx context.Context) (plain, injected int, err error) {
	opts := metav1.ListOptions{Limit: 1000}
	for {
		list, err := b.client.CoreV1().Pods(benchNamespace).List(ctx, opts)
		if err != nil {
			return 0, 0, err
		}
		for _, p := range list.Items {
			if p.Labels[webhook.LabelInjected] == "true" {
				injected++
			} else {
				plain++
			}
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			return plain, injected, nil
		}
	}
}

func (b *bench) rss() (int64, error) { return b.procStatus("VmRSS:") }

// procStatus reads a size field of the injector's /proc/PID/status.
func (b *bench) procStatus(field string) (int64, error) {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.injector.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(f), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, b.injector.Cmd.Process.Pid)
}

// metric reads one unlabelled sample from the injector's /metrics.
func (b *bench) metric(name string) (float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.metricsPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in the injector's /metrics", name)
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/injector: "+format+"\n", args...)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
