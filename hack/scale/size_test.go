package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
