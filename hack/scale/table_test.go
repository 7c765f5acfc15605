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
