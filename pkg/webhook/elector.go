package webhook

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ElectorContainer returns the pod's elector container: the container
// named ContainerName among the init containers (a native sidecar), else
// among the containers; nil for a pod without one. Container names are
// unique across both lists, so at most one matches.
//
// The grant reconciler (pkg/grants) and the EndpointSlice webhook read an
// elector through it, and the policies of config/policy the same way, so
// that what an account is granted and what its writes are checked against
// follow from one reading of the pod.
func ElectorContainer(pod *corev1.Pod) *corev1.Container {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		if i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == ContainerName }); i >= 0 {
			return &cs[i]
		}
	}
	return nil
}

// ElectorFlags maps each -name=value or --name=value argument's name to
// its last value, the last one winning as in Go's flag package. Other
// forms (-name value, ELECTOR_* variables) are not read: the injector
// writes this form, and a grant must follow from what the API server
// stores, read the same way by the reconciler, the webhook and the
// ValidatingAdmissionPolicies.
func ElectorFlags(args []string) map[string]string {
	values := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !ok || !strings.HasPrefix(a, "-") || name == "" || strings.HasPrefix(name, "-") {
			continue
		}
		values[name] = value
	}
	return values
}
