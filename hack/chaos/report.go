package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"
)

// print writes the run's tables.
func (h *harness) print(out io.Writer, o options, elapsed time.Duration, overlaps, early int) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nseed %d, %d elections, faults injected for %s, measured over %s\n\n", o.seed, len(h.elections), o.duration, elapsed.Round(time.Second))

	fmt.Fprintln(w, "ELECTION\tLOCK\tTTL\tRENEW DEADLINE\tRETRY\tSTARTED WITH\tJOINED IN ALL")
	for _, es := range h.elections {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n",
			es.name, es.lock, es.ttl, es.renew().Round(time.Millisecond), es.retry().Round(time.Millisecond), es.size, es.joined)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "FAULT KIND\tINJECTED\tAT LEAST (%d rounds of the deck)\n", h.rounds)
	for _, kind := range append(slices.Clone(electionKinds), globalKinds...) {
		fmt.Fprintf(w, "%s\t%d\t%d\n", kind, h.faults[kind], o.minPerKind)
	}
	for _, kind := range []string{kindReplace, kindReplaceNoWatch} {
		fmt.Fprintf(w, "%s\t%d\t- (after a kill)\n", kind, h.faults[kind])
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "FAULT AS INJECTED\tINJECTED")
	for _, variant := range slices.Sorted(maps.Keys(h.variants)) {
		fmt.Fprintf(w, "%s\t%d\n", variant, h.variants[variant])
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "MEASURE\tN\tP50\tP99\tMAX\tBOUND\tWITHIN BOUND")
	byName := map[string][]measure{}
	for _, m := range h.measures {
		byName[m.name] = append(byName[m.name], m)
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		ms := byName[name]
		values := make([]time.Duration, len(ms))
		within, missing := 0, 0
		for i, m := range ms {
			values[i] = m.value
			if m.missing {
				missing++
			} else if m.value <= m.limit {
				within++
			}
		}
		slices.Sort(values)
		verdict := "-"
		if ms[0].limit > 0 {
			verdict = fmt.Sprintf("%d/%d", within, len(ms))
			if missing > 0 {
				verdict += fmt.Sprintf(" (%d never)", missing)
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, len(ms),
			dur(percentile(values, 50)), dur(percentile(values, 99)), dur(values[len(values)-1]), ms[0].bound, verdict)
	}
	fmt.Fprintln(w)
	for _, m := range h.measures {
		if m.limit > 0 && (m.missing || m.value > m.limit) {
			what := fmt.Sprintf("took %s", dur(m.value))
			if m.missing {
				what = fmt.Sprintf("did not happen within %s", dur(m.value))
			}
			fmt.Fprintf(w, "out of bound: %s in %s, fault at %s: %s, bound %s\n", m.name, m.election, m.at.Format("15:04:05.000"), what, dur(m.limit))
		}
	}
	fmt.Fprintln(w)

	answers, unanswered := 0, 0
	for _, p := range h.all {
		p.mu.Lock()
		answers += p.answers
		unanswered += p.unanswered
		p.mu.Unlock()
	}
	h.chk.mu.Lock()
	intervals := slices.Clone(h.chk.intervals)
	problems := len(h.chk.problems)
	probes, probesTrue := h.chk.probes, h.chk.probesTrue
	h.chk.mu.Unlock()
	slices.Sort(intervals)
	over := 0
	for _, d := range intervals {
		if d > o.pollPeriod+o.pollPeriod/2 {
			over++
		}
	}
	fmt.Fprintln(w, "CHECKER\tVALUE")
	fmt.Fprintf(w, "participants polled\t%d\n", len(h.all))
	fmt.Fprintf(w, "GET / answers\t%d (%.0f/s)\n", answers, float64(answers)/elapsed.Seconds())
	if len(intervals) > 0 {
		fmt.Fprintf(w, "time between two requests to a running participant\tp50 %s, p99 %s, max %s; %.2f%% over %s\n",
			dur(percentile(intervals, 50)), dur(percentile(intervals, 99)), dur(intervals[len(intervals)-1]),
			100*float64(over)/float64(len(intervals)), o.pollPeriod+o.pollPeriod/2)
	}
	fmt.Fprintf(w, "first answers after SIGCONT to a request sent while stopped\t%d, %d of them is_leader=true\n", probes, probesTrue)
	fmt.Fprintf(w, "requests a running participant did not answer\t%d\n", unanswered)
	fmt.Fprintf(w, "problems reported (unanswered, exits, failed injections)\t%d\n", problems+len(h.errs))
	fmt.Fprintf(w, "overlaps: two is_leader=true at one moment in one election\t%d\n", overlaps)
	fmt.Fprintf(w, "leaders less than ttl - renew deadline after the last (no release)\t%d\n", early)
	fmt.Fprintln(w)

	totals := h.counter.totals()
	fmt.Fprintf(w, "API REQUESTS ON THE LOCKS\tPER SECOND over %s\n", elapsed.Round(time.Second))
	var sum float64
	for _, k := range slices.Sorted(maps.Keys(totals)) {
		if totals[k] == 0 {
			continue
		}
		sum += totals[k]
		fmt.Fprintf(w, "%s\t%.2f\n", k, totals[k]/elapsed.Seconds())
	}
	fmt.Fprintf(w, "all\t%.2f\n", sum/elapsed.Seconds())
	fmt.Fprintf(w, "(requests between the last scrape and each kube-apiserver restart are not counted)\n")
	_ = w.Flush()
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(i, 0)]
}

func dur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// checkRoutes checks the routed elections' EndpointSlices against their
// locks (see routing.Check), prints a table of the time the Service had
// no endpoint at the graceful handovers, and returns what broke a rule.
func (h *harness) checkRoutes(out io.Writer) []string {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	var problems []string
	fmt.Fprintln(w, "ROUTED ELECTION\tRELEASED TO TAKEN (median / max, count)\tWITHOUT AN ENDPOINT, EACH TIME (median / max, count)\t"+
		"TWO ADDRESSES, OR ONE NOT HOLDING THE LOCK")
	for _, es := range h.elections {
		if es.routes == nil {
			continue
		}
		es.mu.Lock()
		ipOf := maps.Clone(es.ipOf)
		es.mu.Unlock()
		r := es.routes.Check(ipOf)
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", es.name, medianMax(r.Handovers), medianMax(r.Gaps), len(r.Violations))
		for _, v := range r.Violations {
			problems = append(problems, "routing in "+es.name+": "+v)
		}
	}
	fmt.Fprintln(w)
	return problems
}

func medianMax(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("%s / %s (%d)", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s))
}
