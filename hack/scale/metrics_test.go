package main

import (
	"testing"
)

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
