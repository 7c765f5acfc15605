package webhook

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// Settings are the injector-wide defaults, filled from the injector's flags.
// A pod's annotations override them one by one (see Annotations).
type Settings struct {
	// ElectorImage is the sidecar's image. It has no default: the injector
	// should run the elector of its own release.
	ElectorImage string
	// Port is the elector's HTTP port, 4040 by default, the port upstream
	// k8s-elector documents.
	Port int32
	// TTL is the lease duration; zero leaves it to the elector (election.DefaultTTL).
	TTL time.Duration
	// LockType is the lock object kind; empty leaves it to the elector (leases).
	LockType election.LockType
	// CPURequest and MemoryRequest are the sidecar's requests. The elector
	// renews a lease every few seconds and idles in between, so 10m and 24Mi
	// cover it; they are kept small because they are paid once per pod.
	CPURequest    resource.Quantity
	MemoryRequest resource.Quantity
	// MemoryLimit caps the sidecar, 64Mi by default, so that a leak kills
	// the elector (which restarts) and not the node's other pods; zero sets
	// no limit. There is no CPU limit: throttling the elector could make it
	// miss a renewal and lose the lease.
	MemoryLimit resource.Quantity
	// NativeSidecars says whether the API server supports native sidecars
	// (init containers with restartPolicy Always, on by default since
	// Kubernetes 1.29). An API server without them drops the restartPolicy,
	// and the pod would wait forever on an init container that never exits;
	// so it is false by default and set by the caller after asking the
	// server.
	NativeSidecars bool
}

// DefaultSettings returns the defaults of every setting; the caller must
// still set ElectorImage.
func DefaultSettings() Settings {
	return Settings{
		Port:          4040,
		CPURequest:    resource.MustParse("10m"),
		MemoryRequest: resource.MustParse("24Mi"),
		MemoryLimit:   resource.MustParse("64Mi"),
	}
}

// Validate checks the settings once, at start-up, so that a bad flag stops
// the injector instead of being reported on every pod it sees.
func (s Settings) Validate() error {
	var errs []error
	if err := validateImage(s.ElectorImage); err != nil {
		errs = append(errs, fmt.Errorf("elector image: %w", err))
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is not a port number in 1-65535 (example: 4040)", s.Port))
	}
	if s.TTL != 0 {
		if err := validateTTL(s.TTL); err != nil {
			errs = append(errs, err)
		}
	}
	if s.LockType != "" {
		if _, err := election.ParseLockType(string(s.LockType)); err != nil {
			errs = append(errs, fmt.Errorf("lock type: %w", err))
		}
	}
	for _, q := range []struct {
		name    string
		q       resource.Quantity
		example string
	}{
		{"cpu request", s.CPURequest, "10m"},
		{"memory request", s.MemoryRequest, "24Mi"},
		{"memory limit", s.MemoryLimit, "64Mi"},
	} {
		if q.q.Sign() < 0 {
			errs = append(errs, fmt.Errorf("%s %s must not be negative (example: %s)", q.name, q.q.String(), q.example))
		}
	}
	if !s.MemoryLimit.IsZero() && s.MemoryRequest.Cmp(s.MemoryLimit) > 0 {
		errs = append(errs, fmt.Errorf("memory request %s is above the memory limit %s; raise the limit or set it to 0 for none", s.MemoryRequest.String(), s.MemoryLimit.String()))
	}
	return errors.Join(errs...)
}
