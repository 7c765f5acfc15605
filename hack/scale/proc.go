package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat:
// Linux fixes it at 100 for user space on every architecture Go runs on.
const clockTicks = 100

// cpuSeconds is the CPU time (user + system) that process pid has used.
func cpuSeconds(pid int) (float64, error) {
	ticks, err := readProc(pid, "stat", parseStatTicks)
	return float64(ticks) / clockTicks, err
}

// readProc parses /proc/PID/file with parse.
func readProc[T any](pid int, file string, parse func(string) (T, error)) (T, error) {
	path := fmt.Sprintf("/proc/%d/%s", pid, file)
	raw, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := parse(string(raw))
	if err != nil {
		return v, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// parseStatTicks adds utime and stime, fields 14 and 15 of a
// /proc/PID/stat line. The command name, field 2, is in parentheses and may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')'.
func parseStatTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' closing the command name in %q", stat)
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3, the state.
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return utime + stime, nil
}

// rss is the resident memory of process pid, in bytes.
func rss(pid int) (int64, error) { return readProc(pid, "status", parseVmRSS) }

// parseVmRSS reads the "VmRSS:   1234 kB" line of /proc/PID/status.
func parseVmRSS(status string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a kernel thread, or a process that has exited)")
}

// machineBusy is the CPU time all of the machine's cores have spent on
// anything but idling, from the "cpu" line of /proc/stat.
func machineBusy() (float64, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	ticks, err := parseBusyTicks(string(raw))
	if err != nil {
		return 0, fmt.Errorf("/proc/stat: %w", err)
	}
	return float64(ticks) / clockTicks, nil
}

// parseBusyTicks adds user, nice, system, irq, softirq and steal of the
// first line of /proc/stat: "cpu user nice system idle iowait irq softirq
// steal ...". Guest time is already counted in user.
func parseBusyTicks(stat string) (int64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("first line %q is not \"cpu\" and 8 times", line)
	}
	var busy int64
	for i, f := range fields[1:9] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("field %d of %q: %w", i+2, line, err)
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, nil
}
