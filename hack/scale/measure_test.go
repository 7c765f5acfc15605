package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

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
