package controlplane

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSetFlags(t *testing.T) {
	args := []string{"-leader-elect", "-cert-dir=/tmp/certs", "-webhook-port=9443"}
	got := SetFlags(args, map[string]string{"-webhook-port": "1234", "-kubeconfig": "kc", "-cert-dns-names": "localhost"})
	want := []string{"-leader-elect", "-cert-dir=/tmp/certs", "-webhook-port=1234", "-cert-dns-names=localhost", "-kubeconfig=kc"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SetFlags (-want +got):\n%s", diff)
	}
	if args[2] != "-webhook-port=9443" {
		t.Errorf("SetFlags changed its input: %v", args)
	}
}
