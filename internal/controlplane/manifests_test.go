package controlplane

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestSetFlags(t *testing.T) {
	args := []string{"-leader-elect", "-cert-dir=/tmp/certs", "-webhook-port=9443"}
	got := setFlags(args, map[string]string{"-webhook-port": "1234", "-kubeconfig": "kc", "-cert-dns-names": "localhost"})
	want := []string{"-leader-elect", "-cert-dir=/tmp/certs", "-webhook-port=1234", "-cert-dns-names=localhost", "-kubeconfig=kc"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("setFlags (-want +got):\n%s", diff)
	}
	if args[2] != "-webhook-port=9443" {
		t.Errorf("setFlags changed its input: %v", args)
	}
}

// TestLocalInjectorPointsEveryWebhookAtItsPath: both webhook
// configurations reach the local injector, each webhook at the path its
// Service reference names.
func TestLocalInjectorPointsEveryWebhookAtItsPath(t *testing.T) {
	objs, err := Decode([]byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: k8s-elector-injector}
spec: {template: {spec: {containers: [{name: injector, args: [-leader-elect]}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: k8s-elector-injector}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: k8s-elector-injector}
webhooks:
  - name: inject.elector.vapor.io
    clientConfig: {service: {name: k8s-elector-injector, namespace: k8s-elector-system, path: /mutate-v1-pod, port: 443}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: k8s-elector-injector}
webhooks:
  - name: endpointslice.elector.vapor.io
    clientConfig: {service: {name: k8s-elector-injector, namespace: k8s-elector-system, path: /validate-endpointslice, port: 443}}
`))
	if err != nil {
		t.Fatal(err)
	}
	keep, args, err := localInjector(objs, "https://localhost:9443")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"-leader-elect"}, args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	urls := map[string]string{}
	for _, o := range keep {
		hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
		for _, h := range hooks {
			u, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "url")
			urls[o.GetKind()] = u
			if _, has, _ := unstructured.NestedMap(h.(map[string]any), "clientConfig", "service"); has {
				t.Errorf("%s still names a Service", o.GetKind())
			}
		}
	}
	want := map[string]string{
		"MutatingWebhookConfiguration":   "https://localhost:9443/mutate-v1-pod",
		"ValidatingWebhookConfiguration": "https://localhost:9443/validate-endpointslice",
	}
	if diff := cmp.Diff(want, urls); diff != "" {
		t.Errorf("webhook URLs (-want +got):\n%s", diff)
	}
	if len(keep) != 2 {
		t.Errorf("kept %d objects, want the two webhook configurations", len(keep))
	}
}
