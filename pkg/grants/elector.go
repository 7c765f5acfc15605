package grants

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// Elector is what one pod's elector container runs, read from its command
// line: the only part of a pod that decides what its service account is
// granted. The command line of a container cannot change once the pod
// exists, unlike the pod's annotations and labels, which anyone who may
// patch the pod can edit.
type Elector struct {
	// Election names the lock object.
	Election string
	// LockType is the -lock-type, leases when the flag is absent (the
	// elector's own default).
	LockType election.LockType
	// PodLabel is the -pod-label key, empty when the elector labels no pod.
	PodLabel string
	// PodDeletionCost is -pod-deletion-cost=true: the elector annotates its
	// own pod while it leads.
	PodDeletionCost bool
	// LeaderService is the -leader-service Service, empty when the elector
	// keeps no Service's endpoints.
	LeaderService string
}

// electorOf reads the elector container of pod (webhook.ElectorContainer:
// the container named webhook.ContainerName, among the init containers or
// the containers). It reports false for a pod without one, and an error for
// one whose command line the reconciler does not grant for.
//
// Only -name=value and --name=value are read, the last of a name winning as
// in Go's flag package (webhook.ElectorFlags); the injector writes that form. An elector given its
// election another way (-name value, or ELECTOR_* variables) is granted
// nothing for it: a grant must follow from what the API server stores, read
// the same way by the reconciler and by the ValidatingAdmissionPolicies in
// config/policy.
func electorOf(pod *corev1.Pod) (Elector, bool, error) {
	c := webhook.ElectorContainer(pod)
	if c == nil {
		return Elector{}, false, nil
	}
	flags := webhook.ElectorFlags(c.Args)
	e := Elector{
		Election: flags[election.FlagElection],
		LockType: election.LockLeases,
		PodLabel: flags[election.FlagPodLabel],
		// Only the spelling the injector writes, as the policy reads it.
		PodDeletionCost: flags[election.FlagPodDeletionCost] == "true",
		LeaderService:   flags[election.FlagLeaderService],
	}
	if err := election.ValidateName(e.Election); err != nil {
		return e, true, fmt.Errorf("container %q: -%s %w", webhook.ContainerName, election.FlagElection, err)
	}
	if v, ok := flags[election.FlagLockType]; ok {
		t, err := election.ParseLockType(v)
		if err != nil {
			return e, true, fmt.Errorf("container %q: -%s: %w", webhook.ContainerName, election.FlagLockType, err)
		}
		e.LockType = t
	}
	if _, ok := flags[election.FlagPodLabel]; ok {
		if errs := validation.IsQualifiedName(e.PodLabel); len(errs) > 0 {
			return e, true, fmt.Errorf("container %q: -%s %q is not a label key: %s",
				webhook.ContainerName, election.FlagPodLabel, e.PodLabel, strings.Join(errs, "; "))
		}
		if strings.HasPrefix(e.PodLabel, webhook.AnnotationPrefix) {
			// The injector's own keys, such as the injected label that
			// selects the pods the reconciler grants for, are not an
			// elector's to write.
			return e, true, fmt.Errorf("container %q: -%s %q: keys under %s are the injector's",
				webhook.ContainerName, election.FlagPodLabel, e.PodLabel, webhook.AnnotationPrefix)
		}
	}
	if _, ok := flags[election.FlagLeaderService]; ok {
		// The name of a Service and of its EndpointSlice, granted by name.
		if errs := validation.IsDNS1035Label(e.LeaderService); len(errs) > 0 {
			return e, true, fmt.Errorf("container %q: -%s %q is not a Service name: %s",
				webhook.ContainerName, election.FlagLeaderService, e.LeaderService, strings.Join(errs, "; "))
		}
	}
	return e, true, nil
}
