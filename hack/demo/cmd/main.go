// Command demo runs k8s-elector on a local control plane: `make demo`.
// Ctrl-C stops everything it started.
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
	once := flag.Bool("exit-after-rollout", false, "stop once the handover and the rollout were shown")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Root: ".", Bin: *bin, ExitAfterRollout: *once}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
