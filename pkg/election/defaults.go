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
	FlagElection           = "election"
	FlagHTTP               = "http"
	FlagID                 = "id"
	FlagKubeconfig         = "kubeconfig"
	FlagLockType           = "lock-type"
	FlagNamespace          = "namespace"
	FlagTTL                = "ttl"
	FlagRenewDeadline      = "renew-deadline"
	FlagRetryPeriod        = "retry-period"
	FlagPodLabel           = "pod-label"
	FlagPodName            = "pod-name"
	FlagPodDeletionCost    = "pod-deletion-cost"
	FlagPreferNewest       = "prefer-newest"
	FlagReturnWait         = "return-wait"
	FlagAppHealthURL       = "app-health-url"
	FlagAppHealthPeriod    = "app-health-period"
	FlagAppHealthThreshold = "app-health-threshold"
	FlagNotifyURL          = "notify-url"
	FlagLeaderService      = "leader-service"
	FlagPodIP              = "pod-ip"
	FlagLogFormat          = "log-format"
	FlagVerbosity          = "v"

	// EnvPrefix prefixes the environment variable that may set each flag:
	// ELECTOR_ELECTION sets -election, ELECTOR_LOCK_TYPE sets -lock-type.
	EnvPrefix = "ELECTOR_"
	// EnvPodName and EnvPodNamespace are filled from the downward API in a
	// pod and give the defaults of -id, -pod-name and -namespace.
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvPodIP is filled from the downward API (status.podIP) and gives
	// the default of -pod-ip.
	EnvPodIP = "POD_IP"

	// AnnotationHolderPod is written on the lock object by a leader that
	// labels its pod: the pod's name, so that the next leader can label it
	// standby even when participant IDs are not pod names.
	AnnotationHolderPod = "elector.vapor.io/holder-pod"
	// AnnotationEpoch is written on the lock object by a leader: the epoch
	// of its term (see Status.Epoch), and the record's leaderTransitions it
	// belongs to.
	AnnotationEpoch = "elector.vapor.io/epoch"
	// AnnotationPodDeletionCost is the ReplicaSet controller's annotation
	// that orders a scale-down: pods with a lower cost go first. With
	// -pod-deletion-cost, the leader's pod carries LeaderDeletionCost, the
	// highest there is, and a follower's pod none.
	AnnotationPodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	LeaderDeletionCost        = "2147483647"
	// AnnotationSuccessor is written on the lock object by the newest
	// follower: who takes the lock first after a release (see
	// successor.go).
	AnnotationSuccessor = "elector.vapor.io/successor"

	// With -leader-service=<name>, the leader keeps the EndpointSlice
	// <name> of the selector-less Service <name> listing its own pod
	// alone (see leaderservice.go). The slice carries these labels:
	// LabelServiceName, which ties it to the Service, and LabelManagedBy
	// = ManagedByElector, which keeps the EndpointSlice controllers off
	// it; and AnnotationEpoch, the epoch of the term that wrote it.
	LabelServiceName = "kubernetes.io/service-name"
	LabelManagedBy   = "endpointslice.kubernetes.io/managed-by"
	ManagedByElector = "elector.vapor.io"
	// AnnotationElection, on the Service, names the election whose leader
	// it routes to: the Service's consent to an elector keeping its
	// endpoints.
	AnnotationElection = "elector.vapor.io/election"

	// PathStatus and the other Path constants are the HTTP API's endpoints.
	PathStatus  = "/"
	PathLeader  = "/leader"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
	PathWatch   = "/watch"
	// HeaderEpoch carries Status.Epoch on the answers of /leader.
	HeaderEpoch = "X-Elector-Epoch"

	// DefaultTTL is the lease duration when -ttl is not given: upstream's.
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest lease accepted. A lease is stored in whole
	// seconds, and a renewal is visible to every follower only once it
	// lands in a new second (see RecordPrecision), so a leader needs a renew
	// deadline of more than a second, and the lease a margin beyond that.
	MinTTL = 2 * time.Second

	// RecordPrecision is the precision at which every follower is sure to
	// see a change of the record: ConfigMap and Endpoints records store
	// whole seconds, and older client-go followers compare Lease records at
	// that precision too. A leader therefore never sends a renewal that
	// falls in the same second as its last one (it waits for the next
	// second), and a renew deadline must leave room for that wait.
	RecordPrecision = time.Second

	// minRenewDeadline is the shortest renew deadline DefaultTimings gives:
	// more than 1.2 x RecordPrecision, the longest a healthy leader may
	// wait between two renewals that followers can tell apart.
	minRenewDeadline = 1500 * time.Millisecond
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
// duration the way upstream k8s-elector does, ttl/3 and ttl/6, with one
// difference: the renew deadline is at least 1.5s. The ratios leave a
// leader two retries to renew before it steps down, and a third of the
// lease between its stepping down and anyone else taking over; the floor
// leaves room for the wait of up to a second between renewals that
// followers can tell apart (RecordPrecision), which upstream ignored and
// which let two participants lead at once with short TTLs.
func DefaultTimings(ttl time.Duration) (renewDeadline, retryPeriod time.Duration) {
	return max(ttl/3, minRenewDeadline), ttl / 6
}

// ValidateTimings checks the rules that keep two leaders apart:
//   - ttl of at least MinTTL, in whole seconds (the lease stores seconds);
//   - renew deadline < ttl, so a leader that cannot renew stops calling
//     itself leader before any follower may start;
//   - renew deadline > 1.2 x max(retry period, RecordPrecision): a healthy
//     leader renews at least that often in a way every follower sees (the
//     retry is jittered by up to 20%), or it would step down between
//     renewals.
func ValidateTimings(ttl, renewDeadline, retryPeriod time.Duration) error {
	defRenew, defRetry := DefaultTimings(max(ttl, MinTTL))
	defRenew, defRetry = defRenew.Round(time.Millisecond), defRetry.Round(time.Millisecond)
	switch {
	case ttl < MinTTL:
		return fieldErrorf(FlagTTL, "%s is under the minimum %s (example: 10s)", ttl, MinTTL)
	case ttl%time.Second != 0:
		return fieldErrorf(FlagTTL, "%s is not a whole number of seconds, which is how the lease stores it (example: 10s)", ttl)
	case retryPeriod <= 0:
		return fieldErrorf(FlagRetryPeriod, "%s must be positive (example: %s)", retryPeriod, defRetry)
	case renewDeadline >= ttl:
		return fieldErrorf(FlagRenewDeadline, "%s must be shorter than -%s %s (example: %s)", renewDeadline, FlagTTL, ttl, defRenew)
	case float64(renewDeadline) <= 1.2*float64(max(retryPeriod, RecordPrecision)):
		return fieldErrorf(FlagRenewDeadline, "%s must be more than 1.2 x the longer of -%s %s and %s, "+
			"the precision at which followers see a renewal (example: -%s=%s -%s=%s)",
			renewDeadline, FlagRetryPeriod, retryPeriod, RecordPrecision, FlagRenewDeadline, defRenew, FlagRetryPeriod, defRetry)
	}
	return nil
}
