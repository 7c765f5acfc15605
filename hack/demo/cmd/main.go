// Command demo runs k8s-elector on a local control plane: `make demo`.
// Ctrl-C stops everything it started, and it exits 0.
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
	os.Exit(run(*bin, *once))
}

func run(bin string, once bool) int {
	// Ctrl-C is for the demo alone, not for `make`, which would report it.
	release := takeTerminal()
	defer release()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Root: ".", Bin: bin, ExitAfterRollout: once}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	return 0
}
