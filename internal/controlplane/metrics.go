package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"

	"k8s.io/client-go/kubernetes"
)

// Request is a kind of request kube-apiserver counts: a resource, with
// its subresource if any ("leases", "serviceaccounts/token"), and a verb.
type Request struct{ Resource, Verb string }

func (r Request) String() string { return r.Resource + " " + r.Verb }

var (
	requestTotal = regexp.MustCompile(`^apiserver_request_total\{(.*)\} (\S+)`)
	metricLabel  = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// Requests reads kube-apiserver's /metrics: the requests it served since it
// started, by resource and verb. A restart starts the counts from zero.
func Requests(ctx context.Context, client kubernetes.Interface) (map[Request]float64, error) {
	raw, err := client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	return parseRequests(raw)
}

// parseRequests adds up the apiserver_request_total series of a /metrics
// text by resource (with its subresource) and verb, over the other labels
// (code, scope, component, ...).
func parseRequests(text []byte) (map[Request]float64, error) {
	out := map[Request]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range metricLabel.FindAllSubmatch(m[1], -1) {
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
		out[Request{resource, labels["verb"]}] += v
	}
	return out, sc.Err()
}
