package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// takeTerminal puts the demo in a process group of its own and makes that
// group the terminal's foreground group, so that Ctrl-C (SIGINT to the
// foreground group) reaches the demo but not its parents. GNU make, when it
// gets SIGINT itself, waits for its recipe and then kills itself with
// SIGINT whatever the recipe's exit status, so `make demo` would end in
// status 130 after the demo had stopped cleanly; `exec` in the recipe does
// not help, as make stays the parent. The returned func gives the terminal
// back to the group that had it.
//
// It does nothing when there is no terminal, or the demo is not in its
// foreground group (a background job must leave it alone), or the demo
// already leads its group (as when a shell runs it). When it does take the
// terminal, Ctrl-Z is ignored.
func takeTerminal() (release func()) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return func() {}
	}
	fd := tty.Fd()
	fg, err := tcgetpgrp(fd)
	if err != nil || fg != syscall.Getpgrp() || fg == os.Getpid() {
		tty.Close()
		return func() {}
	}
	// A process outside the foreground group that sets it is sent SIGTTOU,
	// which would stop it: the demo is outside it once it has its own group,
	// until tcsetpgrp, and again once it gives the terminal back.
	signal.Ignore(syscall.SIGTTOU)
	// Ctrl-Z would stop the demo but not make, which goes on waiting for
	// it, with the shell waiting for make: a terminal no key frees.
	signal.Ignore(syscall.SIGTSTP)
	if err := syscall.Setpgid(0, 0); err != nil {
		tty.Close()
		return func() {}
	}
	if err := tcsetpgrp(fd, os.Getpid()); err != nil {
		_ = syscall.Setpgid(0, fg)
		tty.Close()
		return func() {}
	}
	return func() {
		_ = tcsetpgrp(fd, fg)
		tty.Close()
	}
}

func tcgetpgrp(fd uintptr) (int, error) {
	var pgid int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgid))); errno != 0 {
		return 0, errno
	}
	return int(pgid), nil
}

func tcsetpgrp(fd uintptr, pgid int) error {
	id := int32(pgid)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&id))); errno != 0 {
		return errno
	}
	return nil
}
