// Package demo runs the whole system on the local control plane, the way a
// cluster would, and shows it: the injector with config/default's webhook
// configuration and RBAC, the annotated sample Deployment, and each injected
// pod's elector sidecar run as a local process (there is no kubelet) with
// exactly the args and environment the injector wrote.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/vapor-ware/k8s-elector/hack/render"
	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/podrunner"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// Options say where things are and how long to run.
type Options struct {
	// Root is the repository: config/ is read from it.
	Root string
	// Bin holds the built elector and injector.
	Bin string
	// ExitAfterRollout ends the demo once the handover and the rollout
	// were shown, instead of at ctx's end.
	ExitAfterRollout bool
}

const (
	demoNamespace = "demo"
	// sampleService is the Service of config/samples/injected whose
	// endpoint the leader keeps (-leader-service).
	sampleService = "example-leader"
)

// Run runs the demo until ctx is done (or the rollout, with
// ExitAfterRollout), writing what happens to out: a terminal gets a live
// table, redrawn in place; anything else a new table at each change.
// Everything it starts is stopped before it returns, and its last line says
// so. The end of ctx is not an error: it is how the demo is stopped.
func Run(ctx context.Context, opts Options, out io.Writer) (err error) {
	d := &demo{opts: opts, out: out, screen: newScreen(out)}
	d.dir, err = os.MkdirTemp("", "k8s-elector-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(d.dir)

	d.say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
	d.env, err = controlplane.Start(controlplane.Options{ControllerManager: true})
	if err != nil {
		return err
	}
	// stopRunner stops the pod runner and its sidecars, once it runs.
	stopRunner := func() {}
	defer func() {
		d.screen.freeze()
		d.say("stopping the electors, the injector and the control plane")
		d.stopping.Store(true)
		// The processes first: the API server waits for its clients'
		// open watches before it exits.
		stopRunner()
		err = errors.Join(err, d.stopInjector())
		err = errors.Join(err, d.env.Stop())
		if err == nil {
			d.say("stopped everything the demo started; goodbye")
		}
	}()

	if err := d.adminKubeconfig(); err != nil {
		return err
	}
	if err := d.installInjector(ctx); err != nil {
		return err
	}
	// The runner plays the kubelet for the demo's pods: it runs each
	// injected pod's sidecar, marks it ready, and stops it when the pod is
	// deleted.
	d.runner = &podrunner.Runner{
		Client: d.env.Client, Config: d.env.Config, Namespace: demoNamespace,
		Elector: filepath.Join(d.opts.Bin, "elector"), Dir: d.dir, Logf: d.runnerSays,
	}
	// The runner outlives ctx: it stops its sidecars when told to, before
	// the control plane stops.
	runCtx, cancelRunner := context.WithCancel(context.WithoutCancel(ctx))
	runnerDone := make(chan struct{})
	go func() {
		defer close(runnerDone)
		_ = d.runner.Run(runCtx)
	}()
	stopRunner = func() {
		cancelRunner()
		<-runnerDone
	}
	if err := d.applySample(ctx); err != nil {
		return err
	}
	if _, err := d.injectedPods(ctx, 3); err != nil {
		return err
	}
	return d.show(ctx)
}

type demo struct {
	opts  Options
	outMu sync.Mutex
	out   io.Writer
	// screen, when set, is where out is written: Run's log and live table.
	screen *screen
	env    *controlplane.Env
	dir    string
	runner *podrunner.Runner
	// adminConfig is the path of a cluster admin's kubeconfig, for the
	// person watching.
	adminConfig string
	// stopping is set once the demo stops what it started.
	stopping atomic.Bool

	// handedOver is set once the leader's pod was deleted, rolled once
	// the Deployment was rolled.
	handedOver, rolled bool

	injector *controlplane.Injector
}

// print writes to the demo's output: the pod runner says what it does from
// its own goroutine.
func (d *demo) print(text string) {
	if d.screen != nil {
		d.screen.log(text)
		return
	}
	d.outMu.Lock()
	defer d.outMu.Unlock()
	_, _ = io.WriteString(d.out, text)
}

// say logs a line, with the time. Lines after the first are indented
// under the first's text.
func (d *demo) say(format string, args ...any) {
	text := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "\n          ")
	d.print(fmt.Sprintf("%s  %s\n", time.Now().Format("15:04:05"), text))
}

// runnerSays logs what the pod runner does, until the demo stops: then it
// would call each sidecar it stops deleted.
func (d *demo) runnerSays(format string, args ...any) {
	if !d.stopping.Load() {
		d.say(format, args...)
	}
}

// adminKubeconfig writes a kubeconfig of a cluster admin for the person
// watching, and says where it is.
func (d *demo) adminKubeconfig() error {
	user, err := d.env.Env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	raw, err := user.KubeConfig()
	if err != nil {
		return err
	}
	path := filepath.Join(d.dir, "admin.kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return err
	}
	d.adminConfig = path
	d.say("kubeconfig of the local control plane, while the demo runs: %s\ntry: kubectl --kubeconfig %s -n %s get lease,pods,endpointslices",
		path, path, demoNamespace)
	return nil
}

// installInjector applies config/default's namespace, RBAC and webhook
// configuration (the webhooks pointed at the local injector instead of its
// Service) and starts the injector with its own service account's token.
func (d *demo) installInjector(ctx context.Context) error {
	objs, err := d.kustomize("config/default")
	if err != nil {
		return err
	}
	d.say("installing config/default and starting the injector as service account %s/%s; waiting for its certificates",
		controlplane.InjectorNamespace, controlplane.InjectorAccount)
	inj, err := d.env.StartInjector(ctx, controlplane.InjectorOptions{Bin: filepath.Join(d.opts.Bin, "injector"), Dir: d.dir, Objs: objs})
	if err != nil {
		return err
	}
	d.injector = inj
	d.say("the injector (pid %d) is ready: %s", inj.Cmd.Process.Pid, kinds(inj.Objs))
	return nil
}

// applySample creates config/samples/injected in the demo namespace.
func (d *demo) applySample(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: demoNamespace}}
	if _, err := d.env.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	objs, err := d.kustomize("config/samples/injected")
	if err != nil {
		return err
	}
	for _, o := range objs {
		o.SetNamespace(demoNamespace)
	}
	d.say("applying config/samples/injected to namespace %s: %s", demoNamespace, kinds(objs))
	return d.apply(ctx, objs)
}

// kustomize builds the kustomization in dir, a folder of the repository,
// into its objects.
func (d *demo) kustomize(dir string) ([]*unstructured.Unstructured, error) {
	rendered, err := render.Render(filepath.Join(d.opts.Root, dir), "", "")
	if err != nil {
		return nil, err
	}
	return controlplane.Decode([]byte(rendered))
}

// injectedPods waits for n pods of the sample with the elector injected.
func (d *demo) injectedPods(ctx context.Context, n int) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := waitFor(ctx, 60*time.Second, "the Deployment's pods", func() bool {
		list, err := d.env.Client.CoreV1().Pods(demoNamespace).List(ctx, metav1.ListOptions{LabelSelector: webhook.LabelInjected + "=true"})
		if err != nil || len(list.Items) < n {
			return false
		}
		pods = list.Items[:n]
		return true
	})
	if err != nil {
		events, _ := d.env.Client.CoreV1().Events(demoNamespace).List(ctx, metav1.ListOptions{})
		for _, e := range events.Items {
			err = fmt.Errorf("%w\n  %s %s: %s", err, e.InvolvedObject.Name, e.Reason, e.Message)
		}
		return nil, err
	}
	for _, p := range pods {
		c := webhook.ElectorContainer(&p)
		kind := "container"
		if c != nil && c.RestartPolicy != nil {
			kind = "native sidecar"
		}
		d.say("pod %s: the injector added %q (%s): %s", p.Name, webhook.ContainerName, kind, strings.Join(c.Args, " "))
	}
	return pods, nil
}

// show prints the electors' table whenever one of them reports a change
// on its /watch stream, or a pod comes or goes. Once a leader has held for
// a few seconds it deletes the leader's pod and shows the handover; then it
// rolls the Deployment and counts the leader changes of the rollout. Then,
// unless ExitAfterRollout, it keeps the table live until ctx is done.
func (d *demo) show(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	live := newElectors(d.runner, d.env.Client, demoNamespace, sampleService, d.say)
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		live.run(ctx)
	}()
	defer func() {
		cancel()
		<-liveDone
	}()
	d.screen.setHint(fmt.Sprintf("live from each elector's %s stream; Ctrl-C stops the demo\nkubectl --kubeconfig %s -n %s get lease,pods,endpointslices",
		election.PathWatch, d.adminConfig, demoNamespace))

	var leaderSince, deletedAt time.Time
	var leader string
	var roll *rollout
	var toldURLs bool
	// The script waits for time to pass and for the Deployment to finish
	// rolling, so it looks every 200ms until it is done. The table changes
	// only on what the streams and the pod watch report.
	script := time.NewTicker(200 * time.Millisecond)
	defer script.Stop()
	next := script.C
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-live.changed:
			// Changes come in bursts (every elector sees the same lease
			// update): one table for a burst.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		case <-next:
		}
		table, current, running := live.table()
		d.screen.table(table)
		if !toldURLs && current != "" {
			toldURLs = true
			url := "http://" + live.addr(current)
			d.say("each elector answers at its URL in the table: curl -s %s/ shows its view, curl -sN %s%s streams its changes", url, url, election.PathWatch)
		}
		if next == nil {
			continue
		}
		switch {
		case roll != nil:
			done, err := roll.done(ctx)
			if err != nil {
				return err
			}
			if done {
				d.say("rollout done in %s: %d leader change(s); %s, a pod of the rollout, leads",
					time.Since(roll.start).Round(time.Millisecond), roll.changes(), roll.leader())
				roll.stop()
				roll = nil
				if d.opts.ExitAfterRollout {
					return nil
				}
				script.Stop()
				next = nil
				d.say("that was the script; the table stays live (delete a pod and watch it: kubectl --kubeconfig %s -n %s delete pod %s). "+
					"Ctrl-C stops the demo", d.adminConfig, demoNamespace, current)
			}
		case !deletedAt.IsZero() && current != "" && current != leader:
			d.say("handover: %s leads, %s after %s was deleted", current, time.Since(deletedAt).Round(time.Millisecond), leader)
			deletedAt = time.Time{}
			leader, leaderSince = current, time.Now()
		case deletedAt.IsZero() && current != "" && current != leader:
			leader, leaderSince = current, time.Now()
		case deletedAt.IsZero() && !d.rolled && leader != "" && current == leader && time.Since(leaderSince) > 5*time.Second && running == 3:
			if !d.handedOver {
				d.say("deleting the leader's pod %s (its elector gets SIGTERM, as from a kubelet)", leader)
				deletedAt, d.handedOver = time.Now(), true
				if err := d.env.Client.CoreV1().Pods(demoNamespace).Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
					return err
				}
				break
			}
			d.say("rolling Deployment example (kubectl rollout restart): the newest pod is named successor, so leadership moves once, to a new pod")
			d.rolled = true
			var err error
			if roll, err = startRollout(ctx, d.env.Client, demoNamespace, kindDeployment, "example", "example", live.leads); err != nil {
				return err
			}
		}
	}
}

// apply server-side applies objects as the demo's admin.
func (d *demo) apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	return d.env.Apply(ctx, d.env.Config, objs, false)
}

// stopInjector stops the injector, once it runs.
func (d *demo) stopInjector() error {
	if d.injector == nil {
		return nil
	}
	return d.injector.Stop()
}

func kinds(objs []*unstructured.Unstructured) string {
	var names []string
	for _, o := range objs {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	return strings.Join(names, ", ")
}

func waitFor(ctx context.Context, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
