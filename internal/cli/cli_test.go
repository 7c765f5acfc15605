package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFail checks the line printed and the exit code, for usage errors
// wrapped or not and for other errors.
func TestFail(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
		code int
	}{
		{"usagef", Usagef("-ttl: %q is not a duration", "5x"), "elector: -ttl: \"5x\" is not a duration\n", ExitUsage},
		{"usage", Usage(errors.New("-id: empty")), "elector: -id: empty\n", ExitUsage},
		{"wrapped usage", fmt.Errorf("starting: %w", Usagef("-http: in use")), "elector: starting: -http: in use\n", ExitUsage},
		{"other", errors.New("lease lost"), "elector: lease lost\n", ExitError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Fail(&stderr, "elector", tt.err)
			if diff := cmp.Diff(tt.want, stderr.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if code != tt.code {
				t.Errorf("exit code = %d, want %d", code, tt.code)
			}
		})
	}
}

// TestParse checks that -h is flag.ErrHelp, and that a bad flag and a
// left-over argument are usage errors.
func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		want  string // the error's message; "" for none
		help  bool
		usage bool
	}{
		{"flags", []string{"-n=1"}, "", false, false},
		{"help", []string{"-h"}, flag.ErrHelp.Error(), true, false},
		{"unknown flag", []string{"-x"}, "flag provided but not defined: -x", false, true},
		{"argument", []string{"-n=1", "extra"}, `unexpected argument "extra": flags are given as -name=value`, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.Int("n", 0, "a number")
			err := Parse(fs, tt.args)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("error = %q, want %q", got, tt.want)
			}
			if usage := errors.As(err, new(usageError)); usage != tt.usage {
				t.Errorf("usage error = %t, want %t", usage, tt.usage)
			}
			if help := errors.Is(err, flag.ErrHelp); help != tt.help {
				t.Errorf("flag.ErrHelp = %t, want %t", help, tt.help)
			}
		})
	}
}
