package elector

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runElector runs the elector with args to its end and returns its exit
// code and stderr.
func runElector(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, electorBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		// -1: still running after 10s, and killed.
		return exit.ExitCode(), stderr.String()
	default:
		t.Fatalf("elector %v: %v\n%s", args, err, stderr.String())
		return 0, ""
	}
}

// TestShortTTLRefused: a lease shorter than two seconds cannot be renewed
// safely at whole-second precision; the elector refuses it with status 2 and
// one line naming the flag.
func TestShortTTLRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-ttl=1s"},
		{"-ttl=1s", "-renew-deadline=600ms", "-retry-period=200ms"},
	} {
		code, stderr := runElector(t, append([]string{"-election=x", "-kubeconfig=" + adminKubeconfig, "-id=a"}, args...)...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, "ttl") {
			t.Errorf("elector %v: exit %d, stderr %q; want exit 2 and one line naming -ttl", args, code, stderr)
		}
	}
}

// TestKlogFlags runs the elector with the klog flags that upstream's
// command lines carry: they are accepted with one warning line, and the
// elector elects as usual.
func TestKlogFlags(t *testing.T) {
	ns := env.Namespace(t)
	klogFlags := []string{
		"-logtostderr", "-alsologtostderr=true", "-stderrthreshold=INFO", "-log_dir=" + t.TempDir(),
		"-log_file=" + t.TempDir() + "/x.log", "-log_file_max_size=1800", "-vmodule=*=2", "-skip_headers",
		"-skip_log_headers", "-add_dir_header", "-one_output", "-log_backtrace_at=main.go:1",
	}
	w := newWatcher(t, std.gap())
	p := w.start("a", adminKubeconfig, append(electionArgs(ns, std), klogFlags...)...)
	w.waitLeader(settle, p)
	var warnings []string
	for line := range strings.Lines(p.Logs()) {
		if strings.Contains(line, "logtostderr") {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 {
		t.Errorf("%d log lines name the klog flags, want one warning:\n%s", len(warnings), p.Logs())
	}
}
