package webhook

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Settings)
		want   string // "" for valid
	}{
		{name: "defaults with an image", modify: func(*Settings) {}},
		{name: "ttl and lock type", modify: func(s *Settings) { s.TTL = 15 * time.Second; s.LockType = "configmaps" }},
		{name: "endpoints allowed", modify: func(s *Settings) {
			s.LockType = "endpoints"
			s.AllowedLockTypes = []election.LockType{"leases", "configmaps", "endpoints"}
		}},
		{name: "no cpu limit", modify: func(s *Settings) { s.CPULimit = resource.Quantity{} }},
		{name: "no memory limit", modify: func(s *Settings) { s.MemoryLimit = resource.Quantity{} }},
		{
			name:   "no image",
			modify: func(s *Settings) { s.ElectorImage = "" },
			want:   `-elector-image: "" must be a non-empty image reference without whitespace (example: ghcr.io/vapor-ware/k8s-elector:v1.0.0)`,
		},
		{
			name:   "no injector version",
			modify: func(s *Settings) { s.InjectorVersion = "" },
			want:   `injector version: empty; set it to the injector's build version (example: v1.2.0)`,
		},
		{
			name:   "port 0",
			modify: func(s *Settings) { s.Port = 0 },
			want:   `-port: 0 is not a port number in 1-65535 (example: 4040)`,
		},
		{
			name:   "ttl too short",
			modify: func(s *Settings) { s.TTL = time.Millisecond },
			want:   `-ttl: 1ms is under the minimum 2s (example: 10s)`,
		},
		{
			name:   "bad lock type",
			modify: func(s *Settings) { s.LockType = "etcd" },
			want:   `-lock-type: "etcd" is not a lock type (valid: leases, configmaps, endpoints)`,
		},
		{
			name:   "lock type not allowed",
			modify: func(s *Settings) { s.LockType = "endpoints" },
			want:   `-lock-type: endpoints is not one of -allowed-lock-types leases,configmaps; add it to -allowed-lock-types, or set -lock-type to one of them`,
		},
		{
			name:   "default lock type not allowed",
			modify: func(s *Settings) { s.AllowedLockTypes = []election.LockType{"configmaps"} },
			want:   `-lock-type: leases is not one of -allowed-lock-types configmaps; add it to -allowed-lock-types, or set -lock-type to one of them`,
		},
		{
			name:   "no allowed lock types",
			modify: func(s *Settings) { s.AllowedLockTypes = nil },
			want:   `-allowed-lock-types: empty; allow at least one lock type (example: leases,configmaps)`,
		},
		{
			name:   "bad allowed lock type",
			modify: func(s *Settings) { s.AllowedLockTypes = []election.LockType{"leases", "secrets"} },
			want:   `-allowed-lock-types: "secrets" is not a lock type (valid: leases, configmaps, endpoints)`,
		},
		{
			name:   "cpu request above limit",
			modify: func(s *Settings) { s.CPURequest = resource.MustParse("1") },
			want:   `-cpu-request: 1 is above -cpu-limit 100m; raise the limit, or set it to 0 for none`,
		},
		{
			name:   "negative cpu",
			modify: func(s *Settings) { s.CPURequest = resource.MustParse("-1m") },
			want:   `-cpu-request: -1m must not be negative (example: 10m)`,
		},
		{
			name:   "request above limit",
			modify: func(s *Settings) { s.MemoryRequest = resource.MustParse("128Mi") },
			want:   `-memory-request: 128Mi is above -memory-limit 64Mi; raise the limit, or set it to 0 for none`,
		},
		{
			name:   "several",
			modify: func(s *Settings) { s.ElectorImage = ""; s.Port = 70000 },
			want: `-elector-image: "" must be a non-empty image reference without whitespace (example: ghcr.io/vapor-ware/k8s-elector:v1.0.0)` + "\n" +
				`-port: 70000 is not a port number in 1-65535 (example: 4040)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := DefaultSettings()
			s.ElectorImage = "ghcr.io/vapor-ware/k8s-elector:test"
			s.InjectorVersion = "v0.0.0-test"
			tt.modify(&s)
			got := ""
			if err := s.Validate(); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() (-want +got):\n%s", diff)
			}
		})
	}
}
