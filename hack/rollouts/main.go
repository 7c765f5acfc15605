// Command rollouts measures leader changes per rolling update, with and
// without the one-handover mechanism (-prefer-newest, -pod-deletion-cost,
// -return-wait), on the local control plane: `make rollouts`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/vapor-ware/k8s-elector/hack/demo"
)

func main() {
	bin := flag.String("bin", "bin", "the folder with the built elector and injector")
	n := flag.Int("rollouts", 20, "rollouts of each shape, with the mechanism on and off")
	only := flag.String("shape", "", "measure only the shapes whose name holds this text (example: StatefulSet)")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "rollouts: -rollouts must be at least 1")
		os.Exit(2)
	}
	shapes := slices.DeleteFunc(slices.Clone(demo.Shapes), func(s demo.Shape) bool { return !strings.Contains(s.Name, *only) })
	if len(shapes) == 0 {
		fmt.Fprintf(os.Stderr, "rollouts: no shape's name holds %q\n", *only)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := demo.MeasureRollouts(ctx, demo.Options{Root: ".", Bin: *bin}, shapes, *n, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rollouts:", err)
		os.Exit(1)
	}
}
