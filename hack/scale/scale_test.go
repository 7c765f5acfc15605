package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		sorted []int
		p      int
		want   int
	}{
		{[]int{7}, 50, 7},
		{[]int{7}, 100, 7},
		{[]int{1, 2}, 50, 1},
		{[]int{1, 2}, 51, 2},
		{[]int{1, 2, 3, 4}, 50, 2},
		{[]int{1, 2, 3, 4, 5}, 50, 3},
		{[]int{1, 2, 3, 4, 5}, 0, 1},
		{[]int{1, 2, 3, 4, 5}, 100, 5},
		{[]int{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, 90, 90},
		{[]int{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, 91, 100},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %d) = %d, want %d", tc.sorted, tc.p, got, tc.want)
		}
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("10x3, 100x3,30x10")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]size{{10, 3}, {100, 3}, {30, 10}}, got, cmp.AllowUnexported(size{})); diff != "" {
		t.Errorf("parseSizes (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "10", "10x", "x3", "0x3", "10x0", "10x3x2", "ten x3"} {
		if _, err := parseSizes(bad); err == nil {
			t.Errorf("parseSizes(%q) = nil error, want one", bad)
		}
	}
}

func TestLockMix(t *testing.T) {
	m, err := parseLockMix("mixed")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 4 {
		got = append(got, string(m.of(i)))
	}
	if diff := cmp.Diff([]string{"leases", "configmaps", "leases", "configmaps"}, got); diff != "" {
		t.Errorf("mixed locks (-want +got):\n%s", diff)
	}
	if m, _ := parseLockMix("configmaps"); m.of(0) != "configmaps" || m.of(1) != "configmaps" {
		t.Errorf("configmaps gives %s, %s", m.of(0), m.of(1))
	}
	if _, err := parseLockMix("endpoints"); err == nil {
		t.Error("parseLockMix(endpoints) = nil error, want one: the measurement runs leases and configmaps")
	}
}

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

func TestRequestSums(t *testing.T) {
	r := requests{
		{Resource: "leases", Verb: "PUT"}:                 42,
		{Resource: "serviceaccounts/token", Verb: "POST"}: 3,
		{Resource: "configmaps", Verb: "GET"}:             10,
		{Resource: "configmaps", Verb: "LIST"}:            1,
		{Resource: "leases", Verb: "WATCH"}:               7,
		{Resource: "pods", Verb: "APPLY"}:                 2,
	}
	if w, r := r.sum(writeVerbs), r.sum(readVerbs); w != 47 || r != 11 {
		t.Errorf("writes, reads = %v, %v; want 47 (PUT, POST, APPLY), 11 (GET, LIST)", w, r)
	}
}

func TestBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := snapshot{at: t0, requests: requests{{Resource: "leases", Verb: "PUT"}: 100, {Resource: "events", Verb: "POST"}: 5}, api: 10, etcd: 2, electorsCPU: 1, machine: 100}
	b := snapshot{at: t0.Add(20 * time.Second), requests: requests{{Resource: "leases", Verb: "PUT"}: 160, {Resource: "events", Verb: "POST"}: 5, {Resource: "configmaps", Verb: "PUT"}: 20}, api: 14, etcd: 3, electorsCPU: 1.5, machine: 130}
	got := between(a, b)
	want := usage{
		// An unchanged count is left out; a new one counts from zero.
		requests: requests{{Resource: "leases", Verb: "PUT"}: 3, {Resource: "configmaps", Verb: "PUT"}: 1},
		apiCPU:   0.2, etcdCPU: 0.05, electorsCPU: 0.025, machineCPU: 1.5,
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(usage{})); diff != "" {
		t.Errorf("between (-want +got):\n%s", diff)
	}
}

func TestTally(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	answers := []answer{
		// 0: one leader, all answered.
		{0, "a0", true, true, at(5)}, {0, "a1", true, false, at(9)}, {0, "a2", true, false, at(7)},
		// 1: two leaders.
		{1, "b0", true, true, at(1)}, {1, "b1", true, true, at(2)},
		// 2: a leader, but one participant does not answer yet.
		{2, "c0", true, true, at(3)}, {2, "c1", false, false, at(4)},
		// 3: no leader.
		{3, "d0", true, false, at(6)}, {3, "d1", true, false, at(8)},
	}
	want := []verdict{
		{elected: true, leader: "a0", at: at(9)},
		{at: at(2)},
		{at: at(4)},
		{at: at(8)},
	}
	if diff := cmp.Diff(want, tally(4, answers), cmp.AllowUnexported(verdict{})); diff != "" {
		t.Errorf("tally (-want +got):\n%s", diff)
	}
}

func TestRender(t *testing.T) {
	r := result{
		size:       size{100, 3},
		allElected: 12340 * time.Millisecond, electedP50: 4 * time.Second,
		stable: 99,
		idle:   usage{requests: requests{{Resource: "leases", Verb: "PUT"}: 0.4}, apiCPU: 0.05, etcdCPU: 0.01},
		steady: usage{
			requests: requests{{Resource: "leases", Verb: "PUT"}: 30, {Resource: "configmaps", Verb: "PUT"}: 30, {Resource: "leases", Verb: "GET"}: 2},
			apiCPU:   0.8, etcdCPU: 0.2, electorsCPU: 0.3,
		},
		electorsRSS: 3000 << 20, electorRSSp50: 10 << 20, electorRSSMax: 12 << 20,
		apiRSS: 400 << 20, etcdRSS: 100 << 20,
	}
	var b bytes.Buffer
	if err := render(&b, []result{r}); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"100x3", " 300 ", "12.3 s", "4.0 s", "99/100",
		"60.0 (0.4)", // writes: the two PUTs; the GET is a read
		"2.0 (0.0)",
		"0.80 (0.05)", "0.20 (0.01)", "0.30",
		"3000.0 MiB", "10.0 MiB/12.0 MiB", "400.0 MiB", "100.0 MiB",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the table has no %q:\n%s", want, got)
		}
	}
	_, section, ok := strings.Cut(got, "writes per second at steady state, by resource:\n")
	if !ok {
		t.Fatalf("no writes by resource:\n%s", got)
	}
	var rows []string
	for line := range strings.Lines(section) {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	want := []string{"REQUEST 100x3", "configmaps PUT 30.00", "leases PUT 30.00"}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("writes by resource: sorted, without the reads (-want +got):\n%s", diff)
	}
}
