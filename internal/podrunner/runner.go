// Package podrunner plays the kubelet for the elector sidecars of one
// namespace on the local control plane, which has no kubelet. For each pod
// the injector gave a sidecar it:
//   - binds the pod to a node of its own, so that deleting the pod is
//     graceful, as on a real node, and gives it an IP of its own;
//   - starts the sidecar as a local process, with the args and environment
//     the injector wrote (the downward API filled in), a token of the pod's
//     service account bound to the pod, and its HTTP port moved to a free
//     one (every pod here shares one network);
//   - marks the pod Running and Ready once the elector answers its readiness
//     probe, as the kubelet would;
//   - when the pod is deleted, sends the process SIGTERM, waits for it (up to
//     the pod's grace period, then SIGKILL), and removes the pod.
//
// The demo runs its pods with it, and the rollout measurements and tests let
// kube-controller-manager roll Deployments and StatefulSets over it.
package podrunner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// NodeName is the node every pod is bound to.
const NodeName = "podrunner"

// Runner runs the sidecars of one namespace. Fill it in and call Run.
type Runner struct {
	Client kubernetes.Interface
	// Config is the API server's; each elector gets a kubeconfig for it
	// with its own token.
	Config    *rest.Config
	Namespace string
	// Elector is the elector binary.
	Elector string
	// Dir holds the kubeconfigs and logs of the processes.
	Dir string
	// Logf, when set, is told what the runner does.
	Logf func(format string, args ...any)

	mu   sync.Mutex
	pods map[types.UID]*Pod
	ips  int // pod IPs given so far
	wg   sync.WaitGroup
}

// nextIP is a pod IP no other pod of the runner was given: 10.244.0.0/16,
// in turn. The pods' processes all listen on loopback; the IP is what the
// pod reports, and what -leader-service lists.
func (r *Runner) nextIP() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ips++
	return fmt.Sprintf("10.244.%d.%d", r.ips/250%256, r.ips%250+1)
}

// Pod is one pod whose sidecar runs.
type Pod struct {
	Name string
	UID  types.UID
	// Addr is the elector's HTTP address.
	Addr string
	// Labels are the pod's labels when its sidecar started.
	Labels map[string]string
	// LogPath is the elector's log.
	LogPath string

	proc     *controlplane.Process
	stopping bool
}

// Done is closed when the sidecar's process has exited.
func (p *Pod) Done() <-chan struct{} { return p.proc.Done() }

// Running lists the pods whose sidecar runs and has not been told to stop,
// by name.
func (r *Runner) Running() []*Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*Pod
	for _, p := range r.pods {
		if !p.stopping {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (r *Runner) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// Run runs the namespace's pods until ctx is done, then stops every sidecar
// it started. It returns ctx's error, or the first error that stopped it.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	r.pods = map[types.UID]*Pod{}
	r.mu.Unlock()
	defer r.stopAll()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}}
	if _, err := r.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", NodeName, err)
	}
	for ctx.Err() == nil {
		if err := r.watch(ctx); err != nil && ctx.Err() == nil {
			r.logf("pod watch ended: %v; watching again", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ctx.Err()
}

// watch lists the namespace's pods, handles each, and follows the changes
// until the watch ends.
func (r *Runner) watch(ctx context.Context) error {
	pods := r.Client.CoreV1().Pods(r.Namespace)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range list.Items {
		r.handle(ctx, &list.Items[i], false)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				r.handle(ctx, pod, ev.Type == watch.Deleted)
			}
		case watch.Error:
			return apierrors.FromObject(ev.Object)
		}
	}
	return errors.New("watch closed")
}

// handle starts, or stops, the sidecar of pod.
func (r *Runner) handle(ctx context.Context, pod *corev1.Pod, deleted bool) {
	c := webhook.ElectorContainer(pod)
	if c == nil {
		return
	}
	r.mu.Lock()
	p := r.pods[pod.UID]
	r.mu.Unlock()
	switch {
	case deleted:
		if p != nil {
			r.stop(p, 0)
		}
	case pod.DeletionTimestamp != nil:
		if p != nil {
			grace := 30 * time.Second
			if pod.DeletionGracePeriodSeconds != nil {
				grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
			}
			r.wg.Go(func() {
				r.stop(p, grace)
				// The kubelet removes the pod once its containers have
				// stopped.
				err := r.Client.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name,
					metav1.DeleteOptions{GracePeriodSeconds: new(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
				if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					r.logf("remove pod %s: %v", pod.Name, err)
				}
			})
		}
	case p == nil:
		if err := r.start(ctx, pod, c); err != nil && ctx.Err() == nil {
			r.logf("pod %s: %v", pod.Name, err)
		}
	}
}

// start binds pod, starts its sidecar, and marks the pod ready once the
// elector answers its readiness probe.
func (r *Runner) start(ctx context.Context, pod *corev1.Pod, c *corev1.Container) error {
	if pod.Spec.NodeName == "" {
		binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID}, Target: corev1.ObjectReference{Kind: "Node", Name: NodeName}}
		if err := r.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("bind: %w", err)
		}
	}
	if pod.Status.PodIP == "" {
		// The kubelet gives the pod its IP before any container starts.
		ip := r.nextIP()
		pods := r.Client.CoreV1().Pods(pod.Namespace)
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cur.UID != pod.UID {
				return fmt.Errorf("pod %s was replaced", pod.Name)
			}
			cur.Status.PodIP, cur.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
			if cur, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err == nil {
				pod = cur
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("give the pod its IP: %w", err)
		}
	}
	p, err := StartSidecar(ctx, r.Client, r.Config, r.Elector, r.Dir, pod, c)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.pods[pod.UID] = p
	r.mu.Unlock()
	r.logf("pod %s: started its elector (pid %d) as service account %s/%s on %s",
		pod.Name, p.proc.Cmd.Process.Pid, pod.Namespace, serviceAccount(pod), p.Addr)
	r.wg.Go(func() { r.markReady(ctx, pod, p) })
	return nil
}

// StartSidecar starts c, the elector container of pod, as the kubelet
// would: the elector binary with exactly c's args and environment (the
// downward API filled in) and a token of the pod's service account bound
// to the pod. Only -http is remapped, to a free loopback port: every pod
// here shares one network. Its kubeconfig and log are kept in dir.
func StartSidecar(ctx context.Context, client kubernetes.Interface, cfg *rest.Config, elector, dir string,
	pod *corev1.Pod, c *corev1.Container) (*Pod, error) {
	token, err := controlplane.Token(ctx, client, pod.Namespace, serviceAccount(pod), pod)
	if err != nil {
		return nil, err
	}
	raw, err := controlplane.Kubeconfig(cfg, token)
	if err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, pod.Name+".kubeconfig")
	if err := os.WriteFile(kubeconfig, raw, 0o600); err != nil {
		return nil, err
	}
	port, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"-" + election.FlagKubeconfig + "=" + kubeconfig}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "-"+election.FlagHTTP+"=") {
			a = fmt.Sprintf("-%s=127.0.0.1:%d", election.FlagHTTP, port)
		}
		args = append(args, a)
	}
	p := &Pod{Name: pod.Name, UID: pod.UID, Addr: fmt.Sprintf("127.0.0.1:%d", port), Labels: pod.Labels,
		LogPath: filepath.Join(dir, pod.Name+".log")}
	logFile, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(elector, args...)
	cmd.Env = environ(pod, c)
	// Its own process group: a Ctrl-C in the terminal reaches the program
	// that started it, which stops each process in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.proc, err = controlplane.Run(cmd, logFile, nil); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		<-p.Done()
		logFile.Close()
	}()
	return p, nil
}

// serviceAccount is the account pod runs as.
func serviceAccount(pod *corev1.Pod) string { return cmp.Or(pod.Spec.ServiceAccountName, "default") }

// Stop sends the sidecar SIGTERM, as the kubelet does when its pod is
// deleted, and waits for it to exit; after grace it kills it.
func (p *Pod) Stop(grace time.Duration) error { return p.proc.Stop(syscall.SIGTERM, grace) }

// markReady probes the elector's /readyz every 100 ms and marks the pod
// Running and Ready at its first 200.
func (r *Runner) markReady(ctx context.Context, pod *corev1.Pod, p *Pod) {
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := client.Get("http://" + p.Addr + election.PathReadyz)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
	}
	now := metav1.Now()
	for {
		cur, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pod.UID || cur.DeletionTimestamp != nil {
			return
		}
		cur.Status.Phase = corev1.PodRunning
		cur.Status.StartTime = &now
		cur.Status.Conditions = nil
		for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			cur.Status.Conditions = append(cur.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
		}
		_, err = r.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) {
			if err != nil && ctx.Err() == nil {
				r.logf("pod %s: mark ready: %v", pod.Name, err)
			}
			return
		}
	}
}

// stop sends the sidecar SIGTERM and waits for it, up to grace (then it
// kills it; 0: a second).
func (r *Runner) stop(p *Pod, grace time.Duration) {
	r.mu.Lock()
	already := p.stopping
	p.stopping = true
	r.mu.Unlock()
	if !already {
		_ = p.proc.Signal(syscall.SIGTERM)
		r.logf("pod %s: deleted; sent its elector SIGTERM", p.Name)
	}
	if grace <= 0 {
		grace = time.Second
	}
	select {
	case <-p.Done():
	case <-time.After(grace):
		p.proc.Kill()
	}
	r.mu.Lock()
	delete(r.pods, p.UID)
	r.mu.Unlock()
}

// stopAll stops every sidecar: SIGTERM to all, then five seconds for them.
func (r *Runner) stopAll() {
	r.mu.Lock()
	var all []*Pod
	for _, p := range r.pods {
		all = append(all, p)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Go(func() { r.stop(p, 5*time.Second) })
	}
	wg.Wait()
	r.wg.Wait()
}

// environ is the environment of the sidecar c of pod, as the kubelet gives
// it: $PATH, then its variables, with the downward API's pod name,
// namespace and IP filled in.
func environ(pod *corev1.Pod, c *corev1.Container) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "status.podIP":
				v = pod.Status.PodIP
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}
