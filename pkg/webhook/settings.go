package webhook

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// Settings are the injector-wide defaults, filled from the injector's flags.
// A pod's annotations override them one by one (the README's table).
type Settings struct {
	// ElectorImage is the sidecar's image. It has no default: the injector
	// should run the elector of its own release.
	ElectorImage string
	// InjectorVersion is the injector's own version, written on every pod it
	// injects (AnnotationInjectorVersion), so that the pods of an older
	// release can be found after an upgrade. It has no default: the caller
	// passes its build's version, and tests a fixed string, so that inject
	// stays a pure function.
	InjectorVersion string
	// Port is the elector's HTTP port, 4040 by default, the port upstream
	// k8s-elector documents.
	Port int32
	// TTL is the lease duration; zero leaves it to the elector (election.DefaultTTL).
	TTL time.Duration
	// LockType is the lock object kind; empty leaves it to the elector (leases).
	LockType election.LockType
	// AllowedLockTypes are the lock types pods may use, leases and configmaps
	// by default (the injector's -allowed-lock-types flag). Endpoints is the
	// cluster admin's choice: the Role that lets an elector update an
	// Endpoints object lets it steer a Service's traffic, so a pod asking for
	// it is refused unless the admin allowed it. LockType, or leases when it
	// is empty, must be one of them.
	AllowedLockTypes []election.LockType
	// CPURequest and MemoryRequest are the sidecar's requests. The elector
	// renews a lease every few seconds and idles in between, so 10m and 24Mi
	// cover it; they are kept small because they are paid once per pod.
	CPURequest    resource.Quantity
	MemoryRequest resource.Quantity
	// CPULimit caps the sidecar's CPU, 100m by default, so that a namespace
	// whose ResourceQuota counts limits.cpu admits injected pods; zero sets
	// no limit. 100m does not throttle a renewing elector: a renewal costs
	// about a millisecond of CPU, and a 100m quota still gives 10ms in every
	// 100ms CFS period, so even a burst (a new TLS connection, a GC cycle) is
	// delayed by a period or two, far inside the shortest renew deadline
	// (1.5s). A limit near the request (10m, 1ms per period) would be.
	CPULimit resource.Quantity
	// MemoryLimit caps the sidecar, 64Mi by default, so that a leak kills
	// the elector (which restarts) and not the node's other pods; zero sets
	// no limit.
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
// still set ElectorImage and InjectorVersion.
func DefaultSettings() Settings {
	return Settings{
		Port:             4040,
		AllowedLockTypes: []election.LockType{election.LockLeases, election.LockConfigMaps},
		CPURequest:       resource.MustParse("10m"),
		MemoryRequest:    resource.MustParse("24Mi"),
		CPULimit:         resource.MustParse("100m"),
		MemoryLimit:      resource.MustParse("64Mi"),
	}
}

// Validate checks the settings once, at start-up, so that a bad flag stops
// the injector instead of being reported on every pod it sees. Each error
// names the injector's flag for the setting.
func (s Settings) Validate() error {
	var errs []error
	fail := func(flag, format string, args ...any) {
		errs = append(errs, &election.FieldError{Flag: flag, Err: fmt.Errorf(format, args...)})
	}
	if err := validateImage(s.ElectorImage); err != nil {
		fail("elector-image", "%w", err)
	}
	if s.InjectorVersion == "" {
		errs = append(errs, errors.New("injector version: empty; set it to the injector's build version (example: v1.2.0)"))
	}
	if s.Port < 1 || s.Port > 65535 {
		fail("port", "%d is not a port number in 1-65535 (example: 4040)", s.Port)
	}
	if s.TTL != 0 {
		if err := validateTTL(s.TTL); err != nil {
			errs = append(errs, err)
		}
	}
	if len(s.AllowedLockTypes) == 0 {
		fail("allowed-lock-types", "empty; allow at least one lock type (example: leases,configmaps)")
	}
	for _, t := range s.AllowedLockTypes {
		if _, err := election.ParseLockType(string(t)); err != nil {
			fail("allowed-lock-types", "%w", err)
		}
	}
	if _, err := election.ParseLockType(string(s.lockType())); err != nil {
		fail("lock-type", "%w", err)
	} else if len(s.AllowedLockTypes) > 0 && !s.lockTypeAllowed(s.lockType()) {
		fail("lock-type", "%s is not one of -allowed-lock-types %s; add it to -allowed-lock-types, or set -lock-type to one of them",
			s.lockType(), joinLockTypes(s.AllowedLockTypes))
	}
	for _, q := range []struct {
		flag    string
		q       resource.Quantity
		example string
	}{
		{"cpu-request", s.CPURequest, "10m"},
		{"memory-request", s.MemoryRequest, "24Mi"},
		{"cpu-limit", s.CPULimit, "100m"},
		{"memory-limit", s.MemoryLimit, "64Mi"},
	} {
		if q.q.Sign() < 0 {
			fail(q.flag, "%s must not be negative (example: %s)", q.q.String(), q.example)
		}
	}
	if !s.CPULimit.IsZero() && s.CPURequest.Cmp(s.CPULimit) > 0 {
		fail("cpu-request", "%s is above -cpu-limit %s; raise the limit, or set it to 0 for none", s.CPURequest.String(), s.CPULimit.String())
	}
	if !s.MemoryLimit.IsZero() && s.MemoryRequest.Cmp(s.MemoryLimit) > 0 {
		fail("memory-request", "%s is above -memory-limit %s; raise the limit, or set it to 0 for none", s.MemoryRequest.String(), s.MemoryLimit.String())
	}
	return errors.Join(errs...)
}

// lockType is the lock type of an elector whose pod does not choose one:
// LockType, or the elector's own default when it is empty.
func (s Settings) lockType() election.LockType {
	if s.LockType == "" {
		return election.LockTypes[0]
	}
	return s.LockType
}

func (s Settings) lockTypeAllowed(t election.LockType) bool {
	return slices.Contains(s.AllowedLockTypes, t)
}

func joinLockTypes(types []election.LockType) string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = string(t)
	}
	return strings.Join(names, ",")
}
