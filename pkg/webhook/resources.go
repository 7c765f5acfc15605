package webhook

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The sidecar brings its own share of CPU and memory: its requests and
// limits are added to the pod's, never taken from what the app's author
// gave the app. With container-level resources alone that needs nothing
// more than the sidecar's own. A pod that also sets resources for the whole
// pod (spec.resources, the PodLevelResources feature, beta and on by default
// since Kubernetes 1.34) has a budget that the API server checks the
// containers against: the containers' requests must fit in the pod's, and
// each container's limit in the pod's. There the sidecar's share is added to
// the pod's budget too (as Istio's injector proposes to pad it), rather than
// squeezed into it: squeezed in, the sidecar would be refused by the API
// server when the app's requests already fill the budget, or take its share
// from the app's.
//
// The budget the sidecar's share is added to is the one the API server
// settles on. Where the pod leaves a pod-level request or limit out, the
// API server fills it in from the containers, or the request from the
// limit; since Kubernetes 1.37 it does so after the webhooks have run, on
// the injected pod. A pod that sets only pod-level limits would then get
// requests computed from the sidecar's alone (a 1 CPU Guaranteed pod would
// become a 10m Burstable one). So inject settles the budget as the API
// server would on the pod it was given, and writes it out whole, with the
// sidecar's share added: what the API server does afterwards, or did
// before (it filled the values in before the webhooks until 1.37), changes
// nothing.

// podLevelResources are the resources a pod can budget for as a whole.
var podLevelResources = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}

// hasPodLevelResources reports whether the pod sets any resource the API
// server budgets at the pod level (CPU, memory, huge pages), as it decides
// whether to use the pod-level budget for the pod's QoS class.
func hasPodLevelResources(pod *corev1.Pod) bool {
	r := pod.Spec.Resources
	if r == nil {
		return false
	}
	supported := func(name corev1.ResourceName) bool {
		return slices.Contains(podLevelResources, name) || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
	}
	for _, list := range []corev1.ResourceList{r.Requests, r.Limits} {
		for name := range list {
			if supported(name) {
				return true
			}
		}
	}
	return false
}

// budget is a pod-level request and limit of one resource; a value the pod
// has not got is absent, not zero.
type budget struct {
	request, limit       resource.Quantity
	hasRequest, hasLimit bool
}

// settledBudget returns the pod-level budget of r that the API server
// settles on for pod at creation (Kubernetes' DefaultPodLevelResources):
//   - a request left out is the containers' aggregate request when any
//     container requests r, else the pod-level limit;
//   - a limit left out, where there is a request, is the larger of the
//     request and the containers' aggregate limit, when every container
//     has a limit for r; else there is none.
func settledBudget(pod *corev1.Pod, r corev1.ResourceName) budget {
	var b budget
	// Copies: adding to a Quantity that shares its digits with the pod's
	// would change the pod.
	if q, ok := pod.Spec.Resources.Requests[r]; ok {
		b.request, b.hasRequest = q.DeepCopy(), true
	}
	if q, ok := pod.Spec.Resources.Limits[r]; ok {
		b.limit, b.hasLimit = q.DeepCopy(), true
	}
	if !b.hasRequest {
		if q, ok := aggregate(pod, containerRequest, r); ok {
			b.request, b.hasRequest = q, true
		} else if b.hasLimit {
			b.request, b.hasRequest = b.limit.DeepCopy(), true
		}
	}
	if !b.hasLimit && b.hasRequest && everyContainerLimits(pod, r) {
		q, _ := aggregate(pod, containerLimit, r)
		b.limit, b.hasLimit = maxQuantity(b.request, q), true
	}
	return b
}

// guaranteed reports whether the budget is of the Guaranteed QoS class:
// a non-zero request equal to the limit.
func (b budget) guaranteed() bool {
	return b.hasRequest && b.hasLimit && b.request.Sign() > 0 && b.request.Cmp(b.limit) == 0
}

// containerRequest is a container's request for r, as the API server
// defaults it: its limit, when it sets a limit and no request.
func containerRequest(c *corev1.Container, r corev1.ResourceName) (resource.Quantity, bool) {
	if q, ok := c.Resources.Requests[r]; ok {
		return q, true
	}
	q, ok := c.Resources.Limits[r]
	return q, ok
}

func containerLimit(c *corev1.Container, r corev1.ResourceName) (resource.Quantity, bool) {
	q, ok := c.Resources.Limits[r]
	return q, ok
}

// aggregate returns what the pod's containers need of r together, by the
// rule the scheduler and the API server use (KEP-753): the app containers
// and native sidecars run side by side, and each other init container runs
// alone beside the native sidecars declared before it. ok is false when no
// container sets r.
func aggregate(
	pod *corev1.Pod, get func(*corev1.Container, corev1.ResourceName) (resource.Quantity, bool), r corev1.ResourceName,
) (total resource.Quantity, ok bool) {
	var sidecars, inits resource.Quantity
	for i := range pod.Spec.Containers {
		if q, set := get(&pod.Spec.Containers[i], r); set {
			total.Add(q)
			ok = true
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		q, set := get(c, r)
		ok = ok || set
		use := sidecars.DeepCopy()
		use.Add(q)
		if isNativeSidecar(c) {
			total.Add(q)
			sidecars = use
		}
		inits = maxQuantity(inits, use)
	}
	return maxQuantity(total, inits), ok
}

// everyContainerLimits reports whether every container of the pod, init
// containers included, has a limit for r.
func everyContainerLimits(pod *corev1.Pod, r corev1.ResourceName) bool {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if _, ok := c.Resources.Limits[r]; !ok {
			return false
		}
	}
	return true
}

func isNativeSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func maxQuantity(a, b resource.Quantity) resource.Quantity {
	if b.Cmp(a) > 0 {
		return b.DeepCopy()
	}
	return a.DeepCopy()
}

// guaranteed reports whether the pod is of the Guaranteed QoS class. With a
// pod-level budget, the class is the budget's: CPU and memory requests
// equal to their limits. Without one, every container must be Guaranteed:
// CPU and memory limits, and requests equal to them (a request left out
// defaults to its limit). The API server refuses a pod whose class changes,
// so it cannot change later either.
func guaranteed(pod *corev1.Pod) bool {
	if hasPodLevelResources(pod) {
		for _, r := range podLevelResources {
			if !settledBudget(pod, r).guaranteed() {
				return false
			}
		}
		return true
	}
	if len(pod.Spec.Containers) == 0 {
		return false
	}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			for _, r := range podLevelResources {
				limit, ok := cs[i].Resources.Limits[r]
				if !ok || limit.Sign() <= 0 {
					return false
				}
				if request, ok := cs[i].Resources.Requests[r]; ok && request.Cmp(limit) != 0 {
					return false
				}
			}
		}
	}
	return true
}

// guarantee makes the sidecar's requests equal to its limits, so that it
// keeps a Guaranteed pod Guaranteed (and on the kubelet's exclusive CPUs,
// if it has a static CPU manager policy). A limit of none takes the
// request's value instead.
func (o *Options) guarantee() {
	for _, r := range []struct{ request, limit *resource.Quantity }{
		{&o.CPURequest, &o.CPULimit},
		{&o.MemoryRequest, &o.MemoryLimit},
	} {
		if r.limit.IsZero() {
			*r.limit = r.request.DeepCopy()
		} else {
			*r.request = r.limit.DeepCopy()
		}
	}
}

// addToPodBudget returns the pod-level resources of pod, as the API server
// settles them, with the sidecar's share added: its requests to the pod's
// requests, and its limits (or its requests, where it has no limit, so that
// the pod's requests stay within its limits) to the pod's limits. A value
// the pod does not have is left out. It is only for a pod with
// pod-level resources.
func (o Options) addToPodBudget(pod *corev1.Pod) *corev1.ResourceRequirements {
	out := pod.Spec.Resources.DeepCopy()
	shares := map[corev1.ResourceName]struct{ request, limit resource.Quantity }{
		corev1.ResourceCPU:    {o.CPURequest, o.CPULimit},
		corev1.ResourceMemory: {o.MemoryRequest, o.MemoryLimit},
	}
	for _, r := range podLevelResources {
		b := settledBudget(pod, r)
		share := shares[r]
		if share.limit.IsZero() {
			share.limit = share.request
		}
		if b.hasRequest {
			if out.Requests == nil {
				out.Requests = corev1.ResourceList{}
			}
			b.request.Add(share.request)
			out.Requests[r] = b.request
		}
		if b.hasLimit {
			if out.Limits == nil {
				out.Limits = corev1.ResourceList{}
			}
			b.limit.Add(share.limit)
			out.Limits[r] = b.limit
		}
	}
	return out
}
