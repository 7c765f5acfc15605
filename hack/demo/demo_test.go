package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/test/testenv"
)

// TestDemo runs `make demo` to the handover and checks that it went through
// the webhook and the RBAC, handed over, and left no process behind.
func TestDemo(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"elector", "injector"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "github.com/vapor-ware/k8s-elector/cmd/"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, Options{Root: "../..", Bin: bin, ExitAfterHandover: true}, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`the injector added "elector" (native sidecar)`,
		"as service account demo/default",
		"IS_LEADER",
		"handover: ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output has no %q", want)
		}
	}
	if pids := testenv.Processes(os.TempDir() + "/k8s-elector-demo-"); len(pids) > 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}
