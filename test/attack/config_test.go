package attack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/vapor-ware/k8s-elector/hack/render"
	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// configDir is config/ of this tree.
const configDir = "../../config"

// renderConfig renders config/default, with the component config/<component>
// added when component is not empty, as a user would by listing it under
// components: in a kustomization of their own.
func renderConfig(dir, component string) ([]*unstructured.Unstructured, error) {
	base, err := filepath.Abs(filepath.Join(configDir, "default"))
	if err != nil {
		return nil, err
	}
	var out string
	if component == "" {
		out, err = render.Render(base, "", "")
	} else {
		comp, absErr := filepath.Abs(filepath.Join(configDir, component))
		if absErr != nil {
			return nil, absErr
		}
		overlay := filepath.Join(dir, "overlay")
		if err := os.MkdirAll(overlay, 0o700); err != nil {
			return nil, err
		}
		// kustomize takes only relative paths.
		relBase, err := filepath.Rel(overlay, base)
		if err != nil {
			return nil, err
		}
		relComp, err := filepath.Rel(overlay, comp)
		if err != nil {
			return nil, err
		}
		k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n", relBase, relComp)
		if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600); err != nil {
			return nil, err
		}
		if out, err = render.RenderUnrestricted(overlay); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	return controlplane.Decode([]byte(out))
}

// componentFor finds the kustomize Component under config/ whose files
// mention every one of words, such as the one that turns on Endpoints
// locks, and returns its folder relative to config/. It names what it
// looked for when there is none.
func componentFor(words ...string) (string, error) {
	var found string
	err := filepath.WalkDir(configDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || found != "" || !d.IsDir() {
			return err
		}
		k, err := os.ReadFile(filepath.Join(path, "kustomization.yaml"))
		if err != nil || !strings.Contains(string(k), "kind: Component") {
			return nil
		}
		var all strings.Builder
		files, _ := filepath.Glob(filepath.Join(path, "*.yaml"))
		for _, f := range files {
			raw, _ := os.ReadFile(f)
			all.Write(raw)
		}
		for _, w := range words {
			if !strings.Contains(all.String(), w) {
				return nil
			}
		}
		found, err = filepath.Rel(configDir, path)
		return err
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("no kustomize Component under config/ mentions %q", words)
	}
	return found, nil
}

// deleteMissing deletes the objects of old that next does not have.
func deleteMissing(old, next []*unstructured.Unstructured) error {
	key := func(o *unstructured.Unstructured) string {
		return o.GroupVersionKind().GroupKind().String() + "/" + o.GetNamespace() + "/" + o.GetName()
	}
	have := map[string]bool{}
	for _, o := range next {
		have[key(o)] = true
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))
	var errs []error
	for _, o := range old {
		if have[key(o)] {
			continue
		}
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if err := ri.Delete(context.Background(), o.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", key(o), err))
		}
	}
	return errors.Join(errs...)
}

// shipped returns the objects of config/default of a kind, such as the
// ValidatingAdmissionPolicies, by name.
func shipped(kind string) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, o := range current.Objs {
		if o.GetKind() == kind {
			out[o.GetName()] = o
		}
	}
	return out
}
