// Package render builds a kustomization from config/ into one YAML stream,
// with the images set. It uses kustomize as a library, so no kustomize
// binary is needed: `make build-installer`, `make deploy` and the tests of
// config/ all render through it.
package render

import (
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The images config/default names; Render swaps them for the ones asked.
const (
	DefaultInjectorImage = "ghcr.io/vapor-ware/k8s-elector-injector:latest"
	DefaultElectorImage  = "ghcr.io/vapor-ware/k8s-elector:latest"
)

// Render builds the kustomization in dir and sets the images; an empty
// image keeps config/'s.
func Render(dir, injectorImage, electorImage string) (string, error) {
	out, err := build(dir, types.LoadRestrictionsRootOnly)
	if err != nil {
		return "", err
	}
	// Both images appear as plain strings once rendered (the elector's as a
	// flag value), so swapping the exact strings sets them.
	if injectorImage != "" {
		out = strings.ReplaceAll(out, DefaultInjectorImage, injectorImage)
	}
	if electorImage != "" {
		out = strings.ReplaceAll(out, "-elector-image="+DefaultElectorImage, "-elector-image="+electorImage)
		out = strings.ReplaceAll(out, "image: "+DefaultElectorImage, "image: "+electorImage)
	}
	return out, nil
}

// RenderUnrestricted builds a kustomization that may refer to files outside
// its own folder, such as an overlay in a temporary folder.
func RenderUnrestricted(dir string) (string, error) {
	return build(dir, types.LoadRestrictionsNone)
}

func build(dir string, restrictions types.LoadRestrictions) (string, error) {
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = restrictions
	resources, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return "", fmt.Errorf("kustomize %s: %w", dir, err)
	}
	yaml, err := resources.AsYaml()
	if err != nil {
		return "", err
	}
	return string(yaml), nil
}
