package main

import "github.com/vapor-ware/k8s-elector/internal/controlplane"

// requests are kube-apiserver's request counts, or rates, by resource and
// verb.
type requests map[controlplane.Request]float64

// writeVerbs change stored state; readVerbs are the reads that complete
// (a WATCH is counted only when it ends, so it is left out).
var (
	writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}
	readVerbs  = map[string]bool{"GET": true, "LIST": true}
)

// rates is what each count grew by from before to r, per second.
func (r requests) rates(before requests, seconds float64) requests {
	out := requests{}
	for k, n := range r {
		if d := n - before[k]; d > 0 {
			out[k] = d / seconds
		}
	}
	return out
}

// sum adds the counts whose verb is in verbs.
func (r requests) sum(verbs map[string]bool) float64 {
	var total float64
	for k, n := range r {
		if verbs[k.Verb] {
			total += n
		}
	}
	return total
}
