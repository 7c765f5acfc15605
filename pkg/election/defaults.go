package election

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Names that the elector and the injector must agree on. The injector writes
// the elector's command line and environment from these, so they live here,
// once.
const (
	// FlagElection and the other Flag constants are the elector's flag names.
	FlagElection      = "election"
	FlagHTTP          = "http"
	FlagID            = "id"
	FlagKubeconfig    = "kubeconfig"
	FlagLockType      = "lock-type"
	FlagNamespace     = "namespace"
	FlagTTL           = "ttl"
	FlagRenewDeadline = "renew-deadline"
	FlagRetryPeriod   = "retry-period"
	FlagPodLabel      = "pod-label"
	FlagPodName       = "pod-name"
	FlagLogFormat     = "log-format"
	FlagVerbosity     = "v"

	// EnvPrefix prefixes the environment variable that may set each flag:
	// ELECTOR_ELECTION sets -election, ELECTOR_LOCK_TYPE sets -lock-type.
	EnvPrefix = "ELECTOR_"
	// EnvPodName and EnvPodNamespace are filled from the downward API in a
	// pod and give the defaults of -id, -pod-name and -namespace.
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"

	// PathStatus and the other Path constants are the HTTP API's endpoints.
	PathStatus  = "/"
	PathLeader  = "/leader"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
	PathWatch   = "/watch"

	// DefaultTTL is the lease duration when -ttl is not given: upstream's.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest lease accepted. Leases are stored in whole
	// seconds, so anything shorter cannot be written down.
	MinTTL = time.Second
)

// LockType names the kind of Kubernetes object that holds the election.
type LockType string

// The lock types. Leases is the default; ConfigMaps and Endpoints store the
// record in an annotation, in the format that client-go used before it
// dropped them, so a fleet can move from an older elector without two leaders.
const (
	LockLeases     LockType = "leases"
	LockConfigMaps LockType = "configmaps"
	LockEndpoints  LockType = "endpoints"
)

// LockTypes lists the valid lock types, the default first.
var LockTypes = []LockType{LockLeases, LockConfigMaps, LockEndpoints}

// ParseLockType returns the lock type named s, or an error that lists the
// valid ones.
func ParseLockType(s string) (LockType, error) {
	if slices.Contains(LockTypes, LockType(s)) {
		return LockType(s), nil
	}
	names := make([]string, len(LockTypes))
	for i, t := range LockTypes {
		names[i] = string(t)
	}
	return "", fmt.Errorf("%q is not a lock type (valid: %s)", s, strings.Join(names, ", "))
}

// ValidateName checks that name can name the lock object: a DNS-1123
// subdomain, as Leases, ConfigMaps and Endpoints require.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("is required (example: my-app)")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("%q is not a valid Kubernetes object name: %s (example: my-app)", name, strings.Join(errs, "; "))
	}
	return nil
}

// DefaultTimings derives the renew deadline and retry period from the lease
// duration the way upstream k8s-elector does: ttl/3 and ttl/6. The ratios
// leave a leader two retries to renew before it steps down, and a third of
// the lease between its stepping down and anyone else taking over.
func DefaultTimings(ttl time.Duration) (renewDeadline, retryPeriod time.Duration) {
	return ttl / 3, ttl / 6
}

// ValidateTimings checks the rules that keep two leaders apart (the same as
// client-go's): ttl of at least MinTTL, ttl > renew deadline, and
// renew deadline > 1.2 x retry period (the retry period is jittered by up to
// 20%).
func ValidateTimings(ttl, renewDeadline, retryPeriod time.Duration) error {
	switch {
	case ttl < MinTTL:
		return fmt.Errorf("ttl %s is under the minimum %s (example: 10s)", ttl, MinTTL)
	case ttl%time.Second != 0:
		return fmt.Errorf("ttl %s is not a whole number of seconds, which is how the lease stores it (example: 10s)", ttl)
	case retryPeriod <= 0:
		return fmt.Errorf("retry period %s must be positive (example: %s)", retryPeriod, ttl/6)
	case renewDeadline >= ttl:
		return fmt.Errorf("renew deadline %s must be shorter than the ttl %s (example: %s)", renewDeadline, ttl, ttl/3)
	case float64(renewDeadline) <= 1.2*float64(retryPeriod):
		return fmt.Errorf("renew deadline %s must be more than 1.2 x the retry period %s (example: renew deadline %s, retry period %s)", renewDeadline, retryPeriod, ttl/3, ttl/6)
	}
	return nil
}
