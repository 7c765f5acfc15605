// Package prometheus tests config/prometheus: that config/default renders
// with it, that every expression of its alerts and dashboard is PromQL, and
// that every metric they name is exported by a running elector and injector.
package prometheus

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

const (
	configDir     = "../../config"
	componentLine = "#   - ../prometheus"
	// systemNamespace is config/default's namespace.
	systemNamespace = "k8s-elector-system"
)

// render builds config/default as a user enables the component: with the
// commented line of its kustomization uncommented. withComponent false
// builds it as shipped.
func render(t *testing.T, withComponent bool) []*unstructured.Unstructured {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	err := filepath.WalkDir(configDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(configDir, path)
		if err != nil {
			return err
		}
		return fsys.WriteFile(filepath.Join("/config", rel), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	if withComponent {
		k, err := fsys.ReadFile("/config/default/kustomization.yaml")
		if err != nil {
			t.Fatal(err)
		}
		s := string(k)
		if !strings.Contains(s, "\n# components:\n") || !strings.Contains(s, "\n"+componentLine+"\n") {
			t.Fatalf("config/default/kustomization.yaml has no commented %q under a commented components: to enable", componentLine)
		}
		s = strings.Replace(s, "\n# components:\n", "\ncomponents:\n", 1)
		s = strings.Replace(s, "\n"+componentLine+"\n", "\n  - ../prometheus\n", 1)
		// The other commented components stay commented: YAML ignores them
		// between the list's items.
		if err := fsys.WriteFile("/config/default/kustomization.yaml", []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, "/config/default")
	if err != nil {
		t.Fatalf("kustomize config/default (component: %v): %v", withComponent, err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := controlplane.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the one object of kind and name among objs.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("config/default with config/prometheus renders no %s %s", kind, name)
	return nil
}

// TestComponentRenders: config/default with the component renders what it
// rendered without it, unchanged, plus the monitors, the rules and the
// dashboard, in the injector's namespace; the monitors select what the
// injector and the shipped Service actually label and name.
func TestComponentRenders(t *testing.T) {
	plain := render(t, false)
	objs := render(t, true)

	key := func(o *unstructured.Unstructured) string {
		return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
	}
	with := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		with[key(o)] = o
	}
	for _, o := range plain {
		got, ok := with[key(o)]
		if !ok {
			t.Errorf("with the component, %s is gone", key(o))
			continue
		}
		a, _ := json.Marshal(o.Object)
		b, _ := json.Marshal(got.Object)
		if string(a) != string(b) {
			t.Errorf("the component changes %s:\nwithout: %s\nwith:    %s", key(o), a, b)
		}
		delete(with, key(o))
	}
	added := map[string]bool{}
	for k, o := range with {
		added[k] = true
		if o.GetNamespace() != systemNamespace {
			t.Errorf("%s is in namespace %q, want config/default's %s", k, o.GetNamespace(), systemNamespace)
		}
	}
	for _, want := range []string{
		"PodMonitor/" + systemNamespace + "/k8s-elector",
		"ServiceMonitor/" + systemNamespace + "/k8s-elector-injector",
		"PrometheusRule/" + systemNamespace + "/k8s-elector",
		"ConfigMap/" + systemNamespace + "/k8s-elector-dashboard",
	} {
		if !added[want] {
			t.Errorf("the component adds no %s; it adds %v", want, added)
		}
	}
	if t.Failed() {
		return
	}

	// The PodMonitor: every namespace, the injector's label, the sidecar's
	// port name.
	pm := find(t, objs, "PodMonitor", "k8s-elector")
	if any, _, _ := unstructured.NestedBool(pm.Object, "spec", "namespaceSelector", "any"); !any {
		t.Errorf("the PodMonitor does not look in every namespace: %v", pm.Object["spec"])
	}
	sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels")
	if len(sel) != 1 || sel[webhook.LabelInjected] != "true" {
		t.Errorf("the PodMonitor selects %v, want the label the injector sets, %s=true", sel, webhook.LabelInjected)
	}
	endpoints, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != webhook.ContainerName || endpoints[0].(map[string]any)["path"] != "/metrics" {
		t.Errorf("the PodMonitor scrapes %v, want port %q (the sidecar's port name) at /metrics", endpoints, webhook.ContainerName)
	}

	// The ServiceMonitor: a Service of its namespace that it selects has a
	// port of the endpoint's name, the injector's metrics.
	sm := find(t, objs, "ServiceMonitor", "k8s-elector-injector")
	if ns, found, _ := unstructured.NestedFieldNoCopy(sm.Object, "spec", "namespaceSelector"); found {
		t.Errorf("the ServiceMonitor sets a namespaceSelector %v: it must follow config/default's namespace", ns)
	}
	smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	smEndpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(smEndpoints) != 1 {
		t.Fatalf("the ServiceMonitor has %d endpoints, want 1", len(smEndpoints))
	}
	port := smEndpoints[0].(map[string]any)["port"]
	var scraped []string
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetNamespace() != sm.GetNamespace() || !matches(smSel, o.GetLabels()) {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
		for _, p := range ports {
			if p.(map[string]any)["name"] == port {
				scraped = append(scraped, o.GetName())
			}
		}
	}
	if len(scraped) != 1 || scraped[0] != injectorMetricsService(t, objs) {
		t.Errorf("the ServiceMonitor scrapes port %v of the Services %v, want the injector's metrics Service alone", port, scraped)
	}

	// The dashboard, as a ConfigMap Grafana's sidecar loads.
	cm := find(t, objs, "ConfigMap", "k8s-elector-dashboard")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap's labels are %v, want grafana_dashboard: \"1\"", cm.GetLabels())
	}
	file, err := os.ReadFile(filepath.Join(configDir, "prometheus", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if data, _, _ := unstructured.NestedString(cm.Object, "data", "dashboard.json"); data != string(file) {
		t.Errorf("the ConfigMap's dashboard.json is not config/prometheus/dashboard.json")
	}
}

// matches reports whether labels carry every pair of sel.
func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// injectorMetricsService is the name of the Service in front of the
// injector's metrics port: the one whose targetPort is the container port
// that -metrics-bind-address listens on.
func injectorMetricsService(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Service" {
			continue
		}
		ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
		for _, p := range ports {
			if p.(map[string]any)["targetPort"] == "metrics" {
				return o.GetName()
			}
		}
	}
	t.Fatal("config/default renders no Service with targetPort metrics")
	return ""
}

// rule is one alerting rule of the PrometheusRule.
type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// rules are the rules of the rendered PrometheusRule.
func rules(t *testing.T, objs []*unstructured.Unstructured) []rule {
	t.Helper()
	pr := find(t, objs, "PrometheusRule", "k8s-elector")
	raw, err := json.Marshal(pr.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(raw, &spec); err != nil {
		t.Fatalf("the PrometheusRule's spec: %v", err)
	}
	var out []rule
	for _, g := range spec.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatal("the PrometheusRule has no rules")
	}
	return out
}

// panelExpr is one query of a dashboard panel.
type panelExpr struct {
	panel, expr string
}

// dashboardExprs are the queries of every panel of the rendered dashboard.
func dashboardExprs(t *testing.T, objs []*unstructured.Unstructured) []panelExpr {
	t.Helper()
	cm := find(t, objs, "ConfigMap", "k8s-elector-dashboard")
	data, _, _ := unstructured.NestedString(cm.Object, "data", "dashboard.json")
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []panel `json:"panels"`
	}
	var dash struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data), &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var out []panelExpr
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, panelExpr{p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	if len(out) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return out
}
