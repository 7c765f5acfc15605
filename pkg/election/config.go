package election

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Config is one participant's view of an election.
type Config struct {
	// Election names the election and its lock object.
	Election string
	// Namespace holds the lock object.
	Namespace string
	// ID identifies this participant; it is written into the lock as the
	// holder. It must be unique among the participants: two processes with
	// one ID are one participant to the election.
	ID string
	// LockType is the kind of object that holds the lock.
	LockType LockType

	// TTL is the lease duration: how long the others wait, from when they
	// observe the leader's last renewal, before they may take the lock.
	TTL time.Duration
	// RenewDeadline is how long a leader keeps leading without a successful
	// renewal. It must be shorter than TTL, so a leader that cannot renew
	// stops calling itself leader before anyone else may start: the gap
	// (TTL - RenewDeadline) is the margin for clock rates and delays.
	RenewDeadline time.Duration
	// RetryPeriod is how often a leader renews. A follower does not poll:
	// it watches the lock and acts when the lease can expire or is released.
	RetryPeriod time.Duration

	// PodLabel, when set, is a label key the elector keeps on its own pod
	// (PodName) as "leader" or "standby", so a Service can select the leader.
	PodLabel string
	// PodName is the pod the elector runs in; needed with PodLabel and
	// PodDeletionCost.
	PodName string
	// PodDeletionCost, when set, keeps the leader's pod annotated with the
	// highest pod-deletion-cost, so that a ReplicaSet scaled down in a
	// rollout deletes it last (see podlabel.go).
	PodDeletionCost bool

	// PreferNewest keeps the newest participant named as the successor on
	// the lock, and leaves a released lock to it first (see successor.go):
	// one handover per rolling update, to a new pod.
	PreferNewest bool

	// ReturnWait, when set, is how long the others leave the lock to this
	// participant after it releases it on shutdown, for it to come back
	// under the same ID (a StatefulSet's pod does): one handover per
	// StatefulSet rollout, at the cost of a gap of the pod's restart (see
	// successor.go). At most the TTL: a leader that never comes back costs
	// no more than one that crashed.
	ReturnWait time.Duration

	// AppHealthURL, when set, is the application's health endpoint: a
	// participant whose application is not healthy does not take the lock,
	// and a leader whose application turns unhealthy releases it (see
	// apphealth.go). It is probed every AppHealthPeriod (default 1s), and
	// AppHealthThreshold failures in a row (default 3) make it unhealthy.
	AppHealthURL       string
	AppHealthPeriod    time.Duration
	AppHealthThreshold int

	// LeaderService, when set, names a selector-less Service in Namespace
	// whose endpoints this participant keeps: its own pod (PodName, at
	// PodIP) alone while it leads, no endpoint otherwise (see
	// leaderservice.go).
	LeaderService string
	// PodIP is the pod's IP, which LeaderService lists.
	PodIP string

	// NotifyURL, when set, is where the status document is POSTed at start
	// and on every change of it, for applications that cannot hold
	// /watch open (see notify.go).
	NotifyURL string
}

// FieldError is a setting that does not validate: Flag names it as the
// command line does (the elector's, or the injector's for its Settings),
// and Err says what is wrong and the fix.
type FieldError struct {
	Flag string
	Err  error
}

func (e *FieldError) Error() string { return "-" + e.Flag + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErrorf(flag, format string, args ...any) error {
	return &FieldError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// needsPodName is what a setting that needs the pod's name says without it.
const needsPodName = "needs the pod's name: set -" + FlagPodName + " or $" + EnvPodName + " (from the downward API)"

// Validate checks c, and reports the first setting that does not validate
// as a *FieldError. A zero AppHealthPeriod or AppHealthThreshold is the
// default.
func (c *Config) Validate() error {
	if err := ValidateName(c.Election); err != nil {
		return &FieldError{FlagElection, err}
	}
	if c.Namespace == "" {
		return fieldErrorf(FlagNamespace, "is required (example: default)")
	}
	if c.ID == "" {
		return fieldErrorf(FlagID, "is required (example: the pod name)")
	}
	if _, err := ParseLockType(string(c.LockType)); err != nil {
		return &FieldError{FlagLockType, err}
	}
	if err := ValidateTimings(c.TTL, c.RenewDeadline, c.RetryPeriod); err != nil {
		return err
	}
	if c.ReturnWait < 0 || c.ReturnWait > c.TTL || c.ReturnWait > 0 && c.ReturnWait < time.Millisecond {
		return fieldErrorf(FlagReturnWait, "%s must be 0, or between 1ms and -%s (%s)", c.ReturnWait, FlagTTL, c.TTL)
	}
	if c.AppHealthURL != "" {
		if err := ValidateAppHealthURL(c.AppHealthURL); err != nil {
			return &FieldError{FlagAppHealthURL, err}
		}
	}
	if c.AppHealthPeriod != 0 && c.AppHealthPeriod < MinAppHealthPeriod {
		return fieldErrorf(FlagAppHealthPeriod, "%s is under the minimum %s (example: %s)", c.AppHealthPeriod, MinAppHealthPeriod, DefaultAppHealthPeriod)
	}
	if c.AppHealthThreshold < 0 {
		return fieldErrorf(FlagAppHealthThreshold, "%d must be at least 1 (example: %d)", c.AppHealthThreshold, DefaultAppHealthThreshold)
	}
	if c.NotifyURL != "" {
		if err := ValidateNotifyURL(c.NotifyURL); err != nil {
			return &FieldError{FlagNotifyURL, err}
		}
	}
	if c.PodLabel != "" && c.PodName == "" {
		return fieldErrorf(FlagPodLabel, needsPodName)
	}
	if c.PodDeletionCost && c.PodName == "" {
		return fieldErrorf(FlagPodDeletionCost, needsPodName)
	}
	if c.LeaderService != "" {
		if errs := validation.IsDNS1035Label(c.LeaderService); len(errs) > 0 {
			return fieldErrorf(FlagLeaderService, "%q is not a Service name: %s", c.LeaderService, strings.Join(errs, "; "))
		}
		if c.PodName == "" {
			return fieldErrorf(FlagLeaderService, needsPodName)
		}
		if err := validatePodIP(c.PodIP); err != nil {
			return &FieldError{FlagPodIP, err}
		}
	}
	return nil
}
