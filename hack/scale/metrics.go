package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"

	"k8s.io/client-go/kubernetes"
)

// requests counts kube-apiserver's requests so far, by resource and verb.
type requests map[request]float64

// request is a resource, with its subresource if any ("leases",
// "serviceaccounts/token"), and a verb.
type request struct{ resource, verb string }

func (r request) String() string { return r.resource + " " + r.verb }

// writeVerbs change stored state; readVerbs are the reads that complete
// (a WATCH is counted only when it ends, so it is left out).
var (
	writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}
	readVerbs  = map[string]bool{"GET": true, "LIST": true}
)

var (
	requestTotal = regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)`)
	label        = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// scrapeRequests reads kube-apiserver's /metrics.
func scrapeRequests(ctx context.Context, client kubernetes.Interface) (requests, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	return parseRequests(raw)
}

// parseRequests adds up the apiserver_request_total series of a /metrics
// text by resource (with its subresource) and verb, over the other labels
// (code, scope, component, ...).
func parseRequests(text []byte) (requests, error) {
	out := requests{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range label.FindAllSubmatch(m[1], -1) {
			labels[string(l[1])] = string(l[2])
		}
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			return nil, fmt.Errorf("apiserver_request_total{%s}: %w", m[1], err)
		}
		resource := labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			resource += "/" + sub
		}
		out[request{resource, labels["verb"]}] += v
	}
	return out, sc.Err()
}

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
		if verbs[k.verb] {
			total += n
		}
	}
	return total
}
