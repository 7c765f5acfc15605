package main

import (
	"testing"
)

func TestParseStatTicks(t *testing.T) {
	// A command name with a space and a parenthesis; utime 1500, stime 250.
	stat := "4242 (kube-api (x)) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0 0 20 0 12 0 100 2000000 3000 18446744073709551615"
	got, err := parseStatTicks(stat)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1750 {
		t.Errorf("parseStatTicks = %d, want 1750 (utime 1500 + stime 250)", got)
	}
	for _, bad := range []string{"4242 kube-apiserver S 1", "4242 (etcd) S 1 2 3", "4242 (etcd) S 1 4242 4242 0 -1 4194560 1 0 0 0 x 250"} {
		if _, err := parseStatTicks(bad); err == nil {
			t.Errorf("parseStatTicks(%q) = nil error, want one", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS("Name:\telector\nVmPeak:\t 1300000 kB\nVmRSS:\t   12288 kB\nRssAnon:\t 8000 kB\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != 12288*1024 {
		t.Errorf("parseVmRSS = %d, want %d", got, 12288*1024)
	}
	if _, err := parseVmRSS("Name:\tkthreadd\nVmPeak:\t0 kB\n"); err == nil {
		t.Error("parseVmRSS without a VmRSS line = nil error, want one")
	}
}

func TestParseBusyTicks(t *testing.T) {
	stat := "cpu  1000 20 300 9000 400 5 6 7 50 0\ncpu0 500 10 150 4500 200 2 3 3 25 0\nintr 1 2 3\n"
	got, err := parseBusyTicks(stat)
	if err != nil {
		t.Fatal(err)
	}
	// user+nice+system+irq+softirq+steal; not idle, iowait or guest.
	if want := int64(1000 + 20 + 300 + 5 + 6 + 7); got != want {
		t.Errorf("parseBusyTicks = %d, want %d", got, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3"} {
		if _, err := parseBusyTicks(bad); err == nil {
			t.Errorf("parseBusyTicks(%q) = nil error, want one", bad)
		}
	}
}
