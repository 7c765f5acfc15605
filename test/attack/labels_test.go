package attack

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

const roleKey = "example.com/role"

// TestPodLabelIsTheOnlyPodWrite: an elector that labels its pod holds pods
// patch, which alone would let a stolen token rewrite any pod of the
// namespace. With it, the account may set its one label key to leader or
// standby on the pods of its own elections (its own pod, and the pod it
// took over from), and nothing else: not another key, not another value,
// not an image, not a pod of another election, not a pod of no election.
func TestPodLabelIsTheOnlyPodWrite(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.account("api")
	a.account("plain")
	labelled := map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodLabel: roleKey}
	web0 := a.pod("web-0", "web", labelled)
	web1 := a.pod("web-1", "web", labelled)
	// The same account runs a second election, without -pod-label.
	a.pod("web-batch", "web", map[string]string{webhook.AnnotationElection: "batch"})
	api := a.pod("api-0", "api", map[string]string{webhook.AnnotationElection: "api", webhook.AnnotationPodLabel: roleKey})
	a.pod("plain-0", "plain", nil)
	kube := systemPod(t, "attack-target-"+a.ns)
	asWeb0, asWeb1, asAPI := a.elector(web0), a.elector(web1), a.elector(api)

	t.Run("legitimate", func(t *testing.T) {
		// The grant lands asynchronously: the first label is retried, as
		// the elector retries it.
		eventually(t, 30*time.Second, func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{roleKey: "leader"}))
		})
		allowed(t, "web-0 labelling itself standby", mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{roleKey: "standby"})))
		allowed(t, "web-1 labelling itself leader", mergePatch(ctx, asWeb1, a.ns, "web-1", labels(map[string]any{roleKey: "leader"})))
		allowed(t, "web-1, the new leader, demoting web-0", mergePatch(ctx, asWeb1, a.ns, "web-0", labels(map[string]any{roleKey: "standby"})))
		eventually(t, 30*time.Second, func() error {
			return mergePatch(ctx, asAPI, a.ns, "api-0", labels(map[string]any{roleKey: "leader"}))
		})
		if got := a.get("web-0").Labels[roleKey]; got != "standby" {
			t.Errorf("web-0 is labelled %s=%q, want standby", roleKey, got)
		}
	})

	type attack struct {
		name string
		do   func() error
		by   []refusal
	}
	policy := []refusal{byPolicy(policyPodLabel)}
	attacks := []attack{
		{"sets its label to a value other than leader or standby", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{roleKey: "owned"}))
		}, policy},
		{"sets another label key on its pod", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{"app": "leader"}))
		}, policy},
		{"removes another label of its pod (leaving its Service)", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{"app": nil}))
		}, policy},
		{"adds a label to its pod", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{"team": "attacker"}))
		}, policy},
		{"annotates its pod", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", map[string]any{"metadata": map[string]any{"annotations": map[string]any{"x": "y"}}})
		}, policy},
		{"edits its pod's elector annotations", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", map[string]any{"metadata": map[string]any{"annotations": map[string]any{webhook.AnnotationLockType: "endpoints"}}})
		}, policy},
		{"changes its own pod's image", func() error {
			return setImage(ctx, asWeb0, a.ns, "web-0", "app", "attacker.example/miner:latest")
		}, policy},
		{"changes its own elector's image", func() error {
			return setImage(ctx, asWeb0, a.ns, "web-0", webhook.ContainerName, "attacker.example/elector:latest")
		}, policy},
		{"shortens its pod's activeDeadlineSeconds", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", map[string]any{"spec": map[string]any{"activeDeadlineSeconds": 1}})
		}, policy},
		{"removes the injected label from its pod", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{webhook.LabelInjected: nil}))
		}, []refusal{byPolicy(policyPodLabel), byPolicy(policyInjectedLabel)}},
		{"changes the image of a pod of no election", func() error {
			return setImage(ctx, asWeb0, a.ns, "plain-0", "app", "attacker.example/miner:latest")
		}, policy},
		{"labels a pod of no election", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "plain-0", labels(map[string]any{roleKey: "leader"}))
		}, policy},
		{"labels a pod of another account's election", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "api-0", labels(map[string]any{roleKey: "standby"}))
		}, policy},
		{"labels its account's pod of an election without -pod-label", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-batch", labels(map[string]any{roleKey: "leader"}))
		}, policy},
		{"labels a pod of another account's election (as api)", func() error {
			return mergePatch(ctx, asAPI, a.ns, "web-1", labels(map[string]any{roleKey: "standby"}))
		}, policy},
		{"replaces its pod whole (update, not patch)", func() error {
			p := a.get("web-0")
			p.Labels[roleKey] = "leader"
			p.Spec.Containers[0].Image = "attacker.example/miner:latest"
			_, err := asWeb0.CoreV1().Pods(a.ns).Update(ctx, p, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "pods")}},
		{"adds an ephemeral container to a pod", func() error {
			p := a.get("plain-0")
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", Image: "attacker.example/shell:latest", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent,
			}})
			_, err := asWeb0.CoreV1().Pods(a.ns).UpdateEphemeralContainers(ctx, "plain-0", p, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "pods/ephemeralcontainers")}},
		{"deletes a pod", func() error {
			return asWeb0.CoreV1().Pods(a.ns).Delete(ctx, "plain-0", metav1.DeleteOptions{})
		}, []refusal{byRBAC("delete", "pods")}},
		{"labels a kube-system pod", func() error {
			return mergePatch(ctx, asWeb0, "kube-system", kube.Name, labels(map[string]any{roleKey: "leader"}))
		}, []refusal{byRBAC("patch", "pods")}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "an elector account "+at.name, at.do(), at.by...)
		})
	}
	for _, p := range []string{"web-0", "plain-0"} {
		if got := imageOf(t, a.ns, p, "app"); got != "registry.k8s.io/pause:3.10" {
			t.Errorf("pod %s runs %s now", p, got)
		}
	}
	if got := a.get("web-0").Labels["app"]; got != "web" {
		t.Errorf("web-0's app label is %q now", got)
	}
}

// TestInjectedLabelIsTheInjectors: the reconciler grants only to pods that
// carry elector.vapor.io/injected, so the label is guarded: a deployer who
// may patch pods can neither take it off an injected pod (hiding it from
// the reconciler, or flipping its grants), nor put it on another pod.
func TestInjectedLabelIsTheInjectors(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.account("plain")
	a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web"})
	a.pod("plain-0", "plain", nil)
	if got := a.get("web-0").Labels[webhook.LabelInjected]; got != "true" {
		t.Fatalf("web-0 was not injected: label %s=%q", webhook.LabelInjected, got)
	}

	for _, at := range []struct {
		name, pod string
		patch     map[string]any
	}{
		{"removes the injected label", "web-0", labels(map[string]any{webhook.LabelInjected: nil})},
		{"changes the injected label", "web-0", labels(map[string]any{webhook.LabelInjected: "false"})},
		{"adds the injected label to a pod", "plain-0", labels(map[string]any{webhook.LabelInjected: "true"})},
		{"adds the injected label, empty, to a pod", "plain-0", labels(map[string]any{webhook.LabelInjected: ""})},
	} {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "the deployer "+at.name, mergePatch(ctx, a.deployer, a.ns, at.pod, at.patch), byPolicy(policyInjectedLabel))
		})
	}

	// A pod created with the label but no elector, past the webhook (it
	// has no elector annotation): whether or not the policy lets it be
	// created, its account is granted nothing.
	t.Run("creates a pod that claims to be injected", func(t *testing.T) {
		a.account("claims")
		_, err := a.createPod("claims-0", "claims", nil, func(p *corev1.Pod) {
			p.Labels[webhook.LabelInjected] = "true"
		})
		if err != nil {
			refused(t, "the deployer creates a pod labelled injected", err, byPolicy(policyInjectedLabel))
			return
		}
		a.barrier()
		cs := a.elector(a.get("claims-0"))
		for _, r := range []struct{ verb, group, resource, name string }{
			{"create", "coordination.k8s.io", "leases", ""},
			{"update", "coordination.k8s.io", "leases", "claims-0"},
			{"create", "", "events", ""},
			{"patch", "", "pods", "claims-0"},
		} {
			if can(t, cs, a.ns, r.verb, r.group, r.resource, r.name) {
				t.Errorf("ATTACK SUCCEEDED: a pod labelled injected without an elector got its account %s on %s %q", r.verb, r.resource, r.name)
			}
		}
	})
}
