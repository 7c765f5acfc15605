// Package cli is what the elector's and the injector's commands share about
// their command lines: the exit codes, the error that means bad input, and
// how a command reports an error and picks its exit code.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Exit codes: 2 for a command line that cannot work, 1 for a failure later.
const (
	ExitUsage = 2
	ExitError = 1
)

// usageError is bad input: it is printed as one line and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Usagef returns a usage error with the formatted message.
func Usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// Usage returns a usage error with err's message.
func Usage(err error) error { return usageError{err.Error()} }

// Parse parses args into fs, and refuses an argument left over: every
// setting is a flag. It returns flag.ErrHelp, for -h, as it is, and any other
// error as a usage error.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usage(err)
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q: flags are given as -name=value", fs.Arg(0))
	}
	return nil
}

// Fail prints err on stderr as "command: err", and returns the exit code
// for it: ExitUsage for a usage error, ExitError for any other.
func Fail(stderr io.Writer, command string, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", command, err)
	if errors.As(err, new(usageError)) {
		return ExitUsage
	}
	return ExitError
}
