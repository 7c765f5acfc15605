// Command render prints a kustomization from config/ as one YAML stream,
// with the images set: `make build-installer` writes dist/install.yaml with
// it and `make deploy` pipes it to kubectl.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/vapor-ware/k8s-elector/hack/render"
)

func main() {
	injector := flag.String("injector-image", "", "the injector image (default: as config/default says)")
	elector := flag.String("elector-image", "", "the elector image the injector puts into pods (default: as config/default says)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: render [-injector-image IMG] [-elector-image IMG] DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	out, err := render.Render(flag.Arg(0), *injector, *elector)
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	fmt.Print(out)
}
