// Command rollouts measures leader changes per rolling update, with and
// without -prefer-newest, on the local control plane: `make rollouts`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vapor-ware/k8s-elector/hack/demo"
)

func main() {
	bin := flag.String("bin", "bin", "the folder with the built elector and injector")
	n := flag.Int("rollouts", 20, "rollouts of each shape, with and without -prefer-newest")
	flag.Parse()
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "rollouts: -rollouts must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := demo.MeasureRollouts(ctx, demo.Options{Root: ".", Bin: *bin}, demo.Shapes, *n, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rollouts:", err)
		os.Exit(1)
	}
}
