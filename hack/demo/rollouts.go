package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/podrunner"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// Shape is a workload whose rollouts are measured.
type Shape struct {
	Name     string
	Kind     string // Deployment or StatefulSet
	Replicas int32
	// MaxSurge and MaxUnavailable are a Deployment's rolling update.
	MaxSurge, MaxUnavailable string
}

// Shapes are the workloads MeasureRollouts rolls.
var Shapes = []Shape{
	{"Deployment, 3 replicas, maxSurge 1 / maxUnavailable 0", kindDeployment, 3, "1", "0"},
	{"Deployment, 5 replicas, maxSurge 1 / maxUnavailable 0", kindDeployment, 5, "1", "0"},
	{"Deployment, 3 replicas, 25% / 25%", kindDeployment, 3, defaultRollingUpdate, defaultRollingUpdate},
	{"Deployment, 5 replicas, 25% / 25%", kindDeployment, 5, defaultRollingUpdate, defaultRollingUpdate},
	{"StatefulSet, 3 replicas", kindStatefulSet, 3, "", ""},
}

// defaultRollingUpdate is a Deployment's default maxSurge, and its default
// maxUnavailable.
const defaultRollingUpdate = "25%"

const (
	// rolloutElection is the election of the measured workloads.
	rolloutElection = "roll"
	// rolloutWorkload is the name of the measured Deployment or StatefulSet.
	rolloutWorkload = "roll"
)

// RolloutResult is what n rollouts of one shape, with or without the
// one-handover mechanism, showed.
type RolloutResult struct {
	Shape Shape
	// Mechanism is on: -prefer-newest (the default), -pod-deletion-cost on
	// a Deployment, and -return-wait on a StatefulSet (the injector's
	// default there). Off: -prefer-newest=false and -return-wait=0s.
	Mechanism bool
	// Changes are the leader changes of each rollout.
	Changes []int
	// Took is how long each rollout took, to its last leader.
	Took []time.Duration
	// Released is, for each rollout, the longest the lock stayed released
	// before a new holder took it: no one led meanwhile.
	Released []time.Duration
}

// MeasureRollouts rolls each of shapes n times with the mechanism on, and
// n times with it off, on the local control plane with kube-controller-manager
// doing the rollouts and the pod runner playing the kubelet, and writes a
// table of leader changes per rollout to out. Progress goes to log.
func MeasureRollouts(ctx context.Context, opts Options, shapes []Shape, n int, out, log io.Writer) ([]RolloutResult, error) {
	d := &demo{opts: opts, out: log}
	var err error
	d.dir, err = os.MkdirTemp("", "k8s-elector-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d.dir)
	d.say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)")
	d.env, err = controlplane.Start(controlplane.Options{ControllerManager: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, d.stopInjector(), d.env.Stop())
	}()
	if err := d.installInjector(ctx); err != nil {
		return nil, err
	}
	var results []RolloutResult
	for i, shape := range shapes {
		for _, on := range []bool{true, false} {
			res, err := d.measureShape(ctx, fmt.Sprintf("roll-%d-%t", i, on), shape, on, n)
			if err != nil {
				return nil, fmt.Errorf("%s (mechanism %s): %w", shape.Name, onOff(on), err)
			}
			results = append(results, res)
		}
	}
	printRollouts(out, results)
	return results, nil
}

// measureShape runs the shape in namespace ns and rolls it n times.
func (d *demo) measureShape(ctx context.Context, ns string, shape Shape, on bool, n int) (RolloutResult, error) {
	res := RolloutResult{Shape: shape, Mechanism: on}
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if _, err := d.env.Client.CoreV1().Namespaces().Create(ctx, namespace, metav1.CreateOptions{}); err != nil {
		return res, err
	}
	dir := filepath.Join(d.dir, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	runner := &podrunner.Runner{Client: d.env.Client, Config: d.env.Config, Namespace: ns, Elector: filepath.Join(d.opts.Bin, "elector"), Dir: dir}
	rctx, stop := context.WithCancel(ctx)
	runnerDone := make(chan struct{})
	go func() {
		defer close(runnerDone)
		_ = runner.Run(rctx)
	}()
	defer func() {
		stop()
		<-runnerDone
	}()
	if err := d.createWorkload(ctx, ns, shape, on); err != nil {
		return res, err
	}
	d.say("%s, mechanism %s: waiting for %d pods and a leader", shape.Name, onOff(on), shape.Replicas)
	leads := runnerLeads(runner)
	err := waitFor(ctx, 2*time.Minute, "the workload and its leader", func() bool {
		lease, err := d.env.Client.CoordinationV1().Leases(ns).Get(ctx, rolloutElection, metav1.GetOptions{})
		return err == nil && len(runner.Running()) == int(shape.Replicas) && leads(holderOf(lease))
	})
	if err != nil {
		return res, err
	}
	for i := range n {
		r, err := startRollout(ctx, d.env.Client, ns, shape.Kind, rolloutWorkload, rolloutElection, leads)
		if err != nil {
			return res, err
		}
		err = waitFor(ctx, 3*time.Minute, fmt.Sprintf("rollout %d", i+1), func() bool {
			done, derr := r.done(ctx)
			if derr != nil {
				err = derr
				return true
			}
			return done
		})
		r.stop()
		if err != nil {
			return res, err
		}
		res.Changes = append(res.Changes, r.changes())
		res.Took = append(res.Took, time.Since(r.start))
		res.Released = append(res.Released, r.longestRelease())
		if c := r.changes(); c > 1 {
			d.say("%s, mechanism %s: rollout %d changed leader %d times: %s", shape.Name, onOff(on), i+1, c, r.history())
		}
	}
	d.say("%s, mechanism %s: leader changes per rollout %v", shape.Name, onOff(on), res.Changes)
	return res, nil
}

// runnerLeads reports whether the elector of a pod of runner says it leads.
func runnerLeads(runner *podrunner.Runner) func(string) bool {
	return func(pod string) bool {
		for _, p := range runner.Running() {
			if p.Name == pod {
				st, err := controlplane.ElectorStatus(context.Background(), nil, p.Addr)
				return err == nil && st.IsLeader
			}
		}
		return false
	}
}

// createWorkload makes the measured Deployment or StatefulSet, annotated
// for the injector.
func (d *demo) createWorkload(ctx context.Context, ns string, shape Shape, on bool) error {
	labels := map[string]string{"app": "roll"}
	annotations := map[string]string{webhook.AnnotationElection: rolloutElection}
	if on && shape.Kind == kindDeployment {
		// The leader's pod goes last when the ReplicaSet scales down.
		annotations[webhook.AnnotationPodDeletionCost] = "true"
	}
	if !on {
		// Without the mechanism: every follower races for a released
		// lock, and a StatefulSet's leader is not waited for.
		annotations[webhook.AnnotationPreferNewest] = "false"
		annotations[webhook.AnnotationReturnWait] = "0s"
	}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   new(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.k8s.io/pause:3.10",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: new(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	selector := &metav1.LabelSelector{MatchLabels: labels}
	replicas := shape.Replicas
	switch shape.Kind {
	case kindDeployment:
		surge, unavailable := intstr.Parse(shape.MaxSurge), intstr.Parse(shape.MaxUnavailable)
		_, err := d.env.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: rolloutWorkload},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas, Selector: selector, Template: template,
				Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable}},
			},
		}, metav1.CreateOptions{})
		return err
	case kindStatefulSet:
		_, err := d.env.Client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: rolloutWorkload},
			Spec:       appsv1.StatefulSetSpec{Replicas: &replicas, Selector: selector, Template: template, ServiceName: "roll"},
		}, metav1.CreateOptions{})
		return err
	}
	return fmt.Errorf("unknown kind %s", shape.Kind)
}

// printRollouts writes the table of leader changes per rollout.
func printRollouts(out io.Writer, results []RolloutResult) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SHAPE\tMECHANISM\tROLLOUTS\tLEADER CHANGES PER ROLLOUT (mean / max)\tROLLOUTS WITH AT MOST ONE\t"+
		"LOCK RELEASED, NO LEADER (median / max)\tROLLOUT TIME (median)\tGOAL\tMET")
	for _, r := range results {
		sum, atMostOne := 0, 0
		for _, c := range r.Changes {
			sum += c
			if c <= 1 {
				atMostOne++
			}
		}
		took := slices.Clone(r.Took)
		slices.Sort(took)
		released := slices.Clone(r.Released)
		slices.Sort(released)
		goal, met := "-", ""
		if r.Mechanism {
			goal, met = "at most one, every rollout", verdict(atMostOne == len(r.Changes))
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%.2f / %d\t%d of %d\t%s / %s\t%s\t%s\t%s\n", r.Shape.Name, onOff(r.Mechanism), len(r.Changes),
			float64(sum)/float64(max(len(r.Changes), 1)), slices.Max(append([]int{0}, r.Changes...)),
			atMostOne, len(r.Changes), released[len(released)/2].Round(time.Millisecond), released[len(released)-1].Round(time.Millisecond),
			took[len(took)/2].Round(10*time.Millisecond), goal, met)
	}
	_ = w.Flush()
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
