package attack

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The shipped ValidatingAdmissionPolicies (config/policy) that refuse
// attacks; each refusal names its policy.
const (
	// policyPodLabel lets an elector's account change only its -pod-label
	// key, to leader or standby, on pods of its own elections.
	policyPodLabel = "k8s-elector-pod-label"
	// policyInjectedLabel keeps elector.vapor.io/injected from being
	// removed, changed or added.
	policyInjectedLabel = "k8s-elector-injected-label"
	// policyLock lets an elector's account change only the election
	// record of its lock objects, and only of lock objects that an elector
	// wrote.
	policyLock = "k8s-elector-lock"
	// policyLockCreate lets an elector's account create only its own lock
	// objects, as an elector makes them.
	policyLockCreate = "k8s-elector-lock-create"
	// policyPrefix begins the name of every shipped policy.
	policyPrefix = "k8s-elector"
)

// refusal is one way the API server may refuse an attack.
type refusal struct {
	name  string
	match func(error) bool
}

// byRBAC is the RBAC authorizer's refusal of verb on resource (for
// example "update", "leases"): the account holds no such right.
func byRBAC(verb, resource string) refusal {
	return refusal{
		name: fmt.Sprintf("RBAC (cannot %s %s)", verb, resource),
		match: func(err error) bool {
			return apierrors.IsForbidden(err) && strings.Contains(err.Error(), fmt.Sprintf("cannot %s resource %q", verb, resource))
		},
	}
}

// byPolicy is a refusal by the ValidatingAdmissionPolicy named policy, or
// by any shipped policy when policy is policyPrefix.
func byPolicy(policy string) refusal {
	return refusal{
		name: "ValidatingAdmissionPolicy " + policy,
		match: func(err error) bool {
			return (apierrors.IsInvalid(err) || apierrors.IsForbidden(err)) &&
				strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy)
		},
	}
}

// byWebhook is the injector's own refusal at admission, whose message
// contains every one of words. Its status code is the injector's choice
// (403 for a pod it refuses, 413 for one too large to review); the API
// server's prefix says the webhook answered, rather than failed to.
func byWebhook(words ...string) refusal {
	return byWebhookNamed(webhookName, words...)
}

// bySliceWebhook is the injector's refusal of an EndpointSlice write,
// whose message contains every one of words.
func bySliceWebhook(words ...string) refusal {
	return byWebhookNamed(sliceWebhookName, words...)
}

func byWebhookNamed(webhook string, words ...string) refusal {
	return refusal{
		name: fmt.Sprintf("the injector's webhook %s (naming %q)", webhook, words),
		match: func(err error) bool {
			var status apierrors.APIStatus
			if !errors.As(err, &status) || !strings.Contains(err.Error(), fmt.Sprintf("admission webhook %q denied the request", webhook)) {
				return false
			}
			for _, w := range words {
				if !strings.Contains(err.Error(), w) {
					return false
				}
			}
			return true
		},
	}
}

// refused fails the test unless err is one of the refusals by. An attack
// that succeeded is reported as such.
func refused(t *testing.T, attack string, err error, by ...refusal) {
	t.Helper()
	if err == nil {
		t.Errorf("ATTACK SUCCEEDED: %s", attack)
		return
	}
	var names []string
	for _, r := range by {
		if r.match(err) {
			return
		}
		names = append(names, r.name)
	}
	t.Errorf("%s: refused for the wrong reason: %v; want a refusal by %s", attack, err, strings.Join(names, " or "))
}

// allowed fails the test when a legitimate operation failed.
func allowed(t *testing.T, op string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("legitimate %s refused: %v", op, err)
	}
}
