package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vapor-ware/k8s-elector/internal/cli"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// TestBadFlags checks that each bad flag stops the injector with exit code 2
// and one line naming the flag.
func TestBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-elector-image="}, "-elector-image"},
		{[]string{"-port=0"}, "-port: 0 is not a port number"},
		{[]string{"-webhook-port=70000"}, "-webhook-port"},
		{[]string{"-ttl=2500ms"}, "-ttl: 2.5s is not a whole number of seconds"},
		{[]string{"-lock-type=secrets"}, `-lock-type: "secrets" is not a lock type`},
		{[]string{"-allowed-lock-types=leases,secrets"}, `-allowed-lock-types: "secrets" is not a lock type`},
		{[]string{"-allowed-lock-types="}, `-allowed-lock-types: "" is not a lock type`},
		{[]string{"-lock-type=endpoints"}, "-lock-type: endpoints is not one of -allowed-lock-types leases,configmaps; add it to -allowed-lock-types"},
		{[]string{"-allowed-lock-types=configmaps"}, "-lock-type: leases is not one of -allowed-lock-types configmaps"},
		{[]string{"-cpu-limit=lots"}, "-cpu-limit: not a resource quantity"},
		{[]string{"-cpu-request=200m"}, "-cpu-request: 200m is above -cpu-limit 100m"},
		{[]string{"-cpu-request=lots"}, "-cpu-request: not a resource quantity"},
		{[]string{"-memory-limit=-1Mi"}, "-memory-limit: must not be negative"},
		{[]string{"-memory-request=128Mi"}, "-memory-request: 128Mi is above -memory-limit 64Mi"},
		{[]string{"-native-sidecars=maybe"}, "-native-sidecars"},
		{[]string{"-cert-management=manual"}, "-cert-management"},
		{[]string{"-namespace="}, "-namespace: not set"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"-no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", "k8s-elector-system")
			var stderr bytes.Buffer
			code := run(tt.args, &stderr)
			if code != cli.ExitUsage {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, cli.ExitUsage, stderr.String())
			}
			last := strings.TrimSpace(stderr.String())
			if i := strings.LastIndex(last, "\n"); i >= 0 {
				last = last[i+1:]
			}
			if !strings.HasPrefix(last, "injector: ") || !strings.Contains(last, tt.want) {
				t.Errorf("last line of stderr = %q, want it to start with %q and contain %q", last, "injector: ", tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "k8s-elector-system")
	o, err := parse(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.settings.ElectorImage != "ghcr.io/vapor-ware/k8s-elector:"+version || o.settings.InjectorVersion != version || o.settings.Port != 4040 ||
		o.webhookPort != 9443 || o.namespace != "k8s-elector-system" || o.certManagement != certsSelf {
		t.Errorf("defaults = %+v", o)
	}
	if diff := cmp.Diff([]election.LockType{"leases", "configmaps"}, o.settings.AllowedLockTypes); diff != "" {
		t.Errorf("default -allowed-lock-types (-want +got):\n%s", diff)
	}
	if got := o.settings.CPULimit.String(); got != "100m" {
		t.Errorf("default -cpu-limit = %s, want 100m", got)
	}
}

// TestAllowedLockTypes: the kustomize component that allows endpoints
// passes exactly this flag.
func TestAllowedLockTypes(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "k8s-elector-system")
	o, err := parse([]string{"-allowed-lock-types=leases,configmaps,endpoints", "-lock-type=endpoints"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]election.LockType{"leases", "configmaps", "endpoints"}, o.settings.AllowedLockTypes); diff != "" {
		t.Errorf("-allowed-lock-types (-want +got):\n%s", diff)
	}
	if o.settings.LockType != "endpoints" {
		t.Errorf("-lock-type = %s, want endpoints", o.settings.LockType)
	}
}
