// Package config renders every kustomization in config/ and has the real
// API server validate each object with a server-side-apply dry run, so a
// manifest that kubectl would reject fails here first.
package config

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vapor-ware/k8s-elector/hack/render"
	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

var env *controlplane.Env

func TestMain(m *testing.M) {
	var err error
	env, err = controlplane.Start(controlplane.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// TestKustomizations renders each kustomization and dry-runs every object.
func TestKustomizations(t *testing.T) {
	tests := []struct {
		dir   string
		kinds []string // kinds it must contain
	}{
		{"config/default", []string{"Namespace", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}},
		{"config/policy", []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}},
		{"config/samples/injected", []string{"Deployment", "Service"}},
		{"config/samples/standalone", []string{"Deployment", "ServiceAccount", "Role", "RoleBinding"}},
		{"config/elector", []string{"Role"}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			out, err := render.Render("../../"+tt.dir, "example.com/injector:v1", "example.com/elector:v1")
			if err != nil {
				t.Fatal(err)
			}
			objs := decode(t, out)
			seen := map[string]bool{}
			for _, o := range objs {
				seen[o.GetKind()] = true
			}
			for _, k := range tt.kinds {
				if !seen[k] {
					t.Errorf("%s renders no %s", tt.dir, k)
				}
			}
			if tt.dir == "config/default" {
				if !strings.Contains(out, "image: example.com/injector:v1") || !strings.Contains(out, "-elector-image=example.com/elector:v1") {
					t.Errorf("the images were not set:\n%s", out)
				}
			}
			dryRun(t, objs, env.Namespace(t))
		})
	}
}

// TestWebhookPaths: the webhook configurations call the injector at the
// paths it serves its handlers on.
func TestWebhookPaths(t *testing.T) {
	out, err := render.Render("../../config/default", "example.com/injector:v1", "example.com/elector:v1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"MutatingWebhookConfiguration": webhook.PodPath, "ValidatingWebhookConfiguration": webhook.EndpointSlicePath}
	for _, o := range decode(t, out) {
		path, ok := want[o.GetKind()]
		if !ok {
			continue
		}
		delete(want, o.GetKind())
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		if len(hooks) == 0 {
			t.Errorf("%s %s has no webhook", o.GetKind(), o.GetName())
		}
		for _, h := range hooks {
			if got, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "service", "path"); got != path {
				t.Errorf("%s %s calls the injector at %q; it serves that handler at %q", o.GetKind(), o.GetName(), got, path)
			}
		}
	}
	for kind := range want {
		t.Errorf("config/default renders no %s", kind)
	}
}

// TestCertManagerComponent renders config/default with the cert-manager
// component and checks what it switches.
func TestCertManagerComponent(t *testing.T) {
	out, err := render.RenderUnrestricted("testdata/certmanager")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Certificate", "cert-manager.io/inject-ca-from: k8s-elector-system/k8s-elector-injector-cert", "-cert-management=external"} {
		if !strings.Contains(out, want) {
			t.Errorf("with config/certmanager, no %q in:\n%s", want, out)
		}
	}
	// cert-manager's own kinds are not installed here; the rest is checked.
	var objs []*unstructured.Unstructured
	for _, o := range decode(t, out) {
		if !strings.HasPrefix(o.GetAPIVersion(), "cert-manager.io/") {
			objs = append(objs, o)
		}
	}
	// Its CA injector fills both webhook configurations.
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		found := false
		for _, o := range objs {
			if o.GetKind() == kind {
				found = true
				if got := o.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != "k8s-elector-system/k8s-elector-injector-cert" {
					t.Errorf("with config/certmanager, %s %s has inject-ca-from %q", kind, o.GetName(), got)
				}
			}
		}
		if !found {
			t.Errorf("with config/certmanager, no %s", kind)
		}
	}
	// cert-manager writes the Secret: the injector keeps no Secret right.
	role := find(t, objs, "Role", "k8s-elector-injector")
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "secrets") {
			t.Errorf("with config/certmanager, the injector's Role still grants %v on secrets", r.Verbs)
		}
	}
	if len(role.Rules) == 0 {
		t.Errorf("with config/certmanager, the injector's Role lost its Lease rules too")
	}
	dryRun(t, objs, env.Namespace(t))
}

// TestEndpointsComponent: Endpoints locks exist only with
// config/components/endpoints, which allows them in the injector and gives
// it the rights to grant them; config/default has neither.
func TestEndpointsComponent(t *testing.T) {
	for _, tt := range []struct {
		name, dir string
		want      bool
	}{
		{"default", "../../config/default", false},
		{"component", "testdata/endpoints", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := render.RenderUnrestricted(tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			objs := decode(t, out)
			role := find(t, objs, "ClusterRole", "k8s-elector-injector")
			granted := slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "endpoints") })
			allowed := strings.Contains(out, "-allowed-lock-types=leases,configmaps,endpoints")
			if granted != tt.want || allowed != tt.want {
				t.Errorf("the injector's ClusterRole has endpoints: %v, its args allow endpoints: %v; want both %v", granted, allowed, tt.want)
			}
			dryRun(t, objs, env.Namespace(t))
		})
	}
}

// find returns the Role or ClusterRole kind/name among objs, as a Role.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *rbacv1.Role {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != kind || o.GetName() != name {
			continue
		}
		var role rbacv1.Role
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			t.Fatal(err)
		}
		return &role
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

func decode(t *testing.T, stream string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := controlplane.Decode([]byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// dryRun server-side applies each object with dryRun=All. Namespaces are
// created for real first (a dry-run namespace holds nothing); objects
// without a namespace go into fallbackNS.
func dryRun(t *testing.T, objs []*unstructured.Unstructured, fallbackNS string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var namespaced []*unstructured.Unstructured
	for _, o := range objs {
		switch {
		case o.GetKind() == "Namespace":
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.GetName()}}
			if _, err := env.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		case o.GetNamespace() == "" && !clusterScoped[o.GetKind()]:
			o.SetNamespace(fallbackNS)
		}
		namespaced = append(namespaced, o)
	}
	if err := env.Apply(ctx, env.Config, namespaced, true); err != nil {
		t.Error(err)
	}
}

// clusterScoped are the kinds in config/ that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}
