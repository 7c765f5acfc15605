package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Decode splits a YAML stream into objects.
func Decode(stream []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// ReadRoles reads the Roles in a YAML file, such as config/elector/role.yaml.
func ReadRoles(path string) ([]rbacv1.Role, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var roles []rbacv1.Role
	for {
		var r rbacv1.Role
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return roles, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		roles = append(roles, r)
	}
}

// Apply server-side applies objects as the user of cfg; with dryRun the API
// server validates and admits them but stores nothing.
func (e *Env) Apply(ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured, dryRun bool) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(e.Client.Discovery()))
	opts := metav1.ApplyOptions{FieldManager: "k8s-elector-tests", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var errs []error
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err))
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(mapping.Resource).Namespace(o.GetNamespace())
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, opts); err != nil {
			errs = append(errs, fmt.Errorf("the API server rejects %s %s/%s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// Kubeconfig is a kubeconfig for the API server of cfg that authenticates
// with token, for a process such as the elector or the injector.
func Kubeconfig(cfg *rest.Config, token string) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["local"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "local"}
	kc.CurrentContext = "local"
	return clientcmd.Write(*kc)
}

// localInjector splits config/default's rendered objects for an injector
// run as a local process instead of as pods: it returns the objects to
// apply (without the injector's Deployment, Service and
// PodDisruptionBudget, and with every webhook, mutating and validating,
// pointed at server (https://host:port), each at the path its Service
// reference names: webhook.PodPath, webhook.EndpointSlicePath), and the
// injector container's args from the Deployment, so the local process runs
// with the flags a cluster would give it.
func localInjector(objs []*unstructured.Unstructured, server string) ([]*unstructured.Unstructured, []string, error) {
	base, err := url.Parse(server)
	if err != nil || base.Host == "" {
		return nil, nil, fmt.Errorf("webhook server %q is not an https://host:port URL: %v", server, err)
	}
	var keep []*unstructured.Unstructured
	var args []string
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			containers, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			if err != nil || len(containers) == 0 {
				return nil, nil, fmt.Errorf("the injector Deployment %s has no container: %v", o.GetName(), err)
			}
			if args, _, err = unstructured.NestedStringSlice(containers[0].(map[string]any), "args"); err != nil {
				return nil, nil, err
			}
			continue
		case "Service", "PodDisruptionBudget":
			continue
		case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
			hooks, _, err := unstructured.NestedSlice(o.Object, "webhooks")
			if err != nil {
				return nil, nil, err
			}
			for _, h := range hooks {
				hook := h.(map[string]any)
				u := *base
				if path, ok, _ := unstructured.NestedString(hook, "clientConfig", "service", "path"); ok {
					u.Path = path
				}
				hook["clientConfig"] = map[string]any{"url": u.String()}
			}
			if err := unstructured.SetNestedSlice(o.Object, hooks, "webhooks"); err != nil {
				return nil, nil, err
			}
		}
		keep = append(keep, o)
	}
	if len(args) == 0 {
		return nil, nil, errors.New("no injector Deployment with args among the objects")
	}
	return keep, args, nil
}

// setFlags replaces the values of the -name=value args named in values,
// and appends those that args does not have.
func setFlags(args []string, values map[string]string) []string {
	out := slices.Clone(args)
	seen := map[string]bool{}
	for i, a := range out {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := values[name]; ok {
			out[i] = name + "=" + v
			seen[name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(values)) {
		if !seen[name] {
			out = append(out, name+"="+values[name])
		}
	}
	return out
}
