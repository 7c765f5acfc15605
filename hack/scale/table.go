package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// result is one size's figures.
type result struct {
	size size
	// allElected is from the first process started until every election
	// had exactly one leader; electedP50 until half of them had.
	allElected, electedP50 time.Duration
	// stable counts the elections with the same one leader at the start
	// and the end of the steady window.
	stable int
	// idle is the control plane before the electors started; steady is
	// after they all elected and settled.
	idle, steady usage
	// Resident memory at the end of the steady window, in bytes.
	electorsRSS, electorRSSp50, electorRSSMax int64
	apiRSS, etcdRSS                           int64
}

// percentile is the nearest-rank p-th percentile of sorted, which must not
// be empty.
func percentile[T any](sorted []T, p int) T {
	rank := (len(sorted)*p + 99) / 100 // ceil(n*p/100)
	return sorted[max(rank, 1)-1]
}

// render prints a row per size, then the writes per second by resource.
func render(out io.Writer, results []result) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "SIZE\tELECTORS\tALL ELECTED\tELECTED p50\tSTABLE\tWRITES/s (idle)\tREADS/s (idle)\tAPISERVER CPU (idle)\tETCD CPU (idle)\t"+
		"ELECTORS CPU\tELECTORS RSS\tRSS EACH p50/max\tAPISERVER RSS\tETCD RSS\tMACHINE CPU (idle)\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s/%s\t%s\t%s\t%s\t\n",
			r.size, r.size.elections*r.size.participants,
			seconds(r.allElected), seconds(r.electedP50),
			r.stable, r.size.elections,
			withIdle("%.1f", r.steady.requests.sum(writeVerbs), r.idle.requests.sum(writeVerbs)),
			withIdle("%.1f", r.steady.requests.sum(readVerbs), r.idle.requests.sum(readVerbs)),
			withIdle("%.2f", r.steady.apiCPU, r.idle.apiCPU),
			withIdle("%.2f", r.steady.etcdCPU, r.idle.etcdCPU),
			r.steady.electorsCPU,
			mib(r.electorsRSS), mib(r.electorRSSp50), mib(r.electorRSSMax), mib(r.apiRSS), mib(r.etcdRSS),
			withIdle("%.2f", r.steady.machineCPU, r.idle.machineCPU))
	}
	if err := w.Flush(); err != nil {
		return err
	}

	// Which writes: the lock renewals, and what else grows.
	writes := map[controlplane.Request]bool{}
	for _, r := range results {
		for k := range r.steady.requests {
			if writeVerbs[k.Verb] {
				writes[k] = true
			}
		}
	}
	fmt.Fprintln(out, "\nwrites per second at steady state, by resource:")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(w, "REQUEST\t")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t", r.size)
	}
	fmt.Fprintln(w)
	for _, k := range slices.SortedFunc(maps.Keys(writes), func(a, b controlplane.Request) int {
		return cmp.Or(cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Verb, b.Verb))
	}) {
		fmt.Fprintf(w, "%s\t", k)
		for _, r := range results {
			fmt.Fprintf(w, "%.2f\t", r.steady.requests[k])
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

func withIdle(format string, steady, idle float64) string {
	return fmt.Sprintf(format+" ("+format+")", steady, idle)
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
