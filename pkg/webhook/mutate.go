package webhook

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// Names of what the injector adds to a pod. They are reserved: a pod that
// already uses one of them is refused rather than half-injected.
const (
	// ContainerName names the sidecar, and its containerPort.
	ContainerName = "elector"
	// APIAccessVolumeName names the projected volume holding the sidecar's
	// service-account token.
	APIAccessVolumeName = "elector-api-access"
	// APIAccessMountPath is where client-go's in-cluster config looks for
	// the token, CA and namespace.
	APIAccessMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// tokenExpirationSeconds is what the ServiceAccount admission plugin uses for
// its own kube-api-access volume: a one-hour token, plus seven seconds that
// mark it as one the kubelet refreshes.
const tokenExpirationSeconds = 3607

// inject returns a copy of pod with the elector sidecar added, as its
// annotations ask, with settings s that passed Settings.Validate (NewHandler
// checks them once, at start-up). It never modifies pod. A pod without elector annotations,
// or one injected before (the webhook may be reinvoked), comes back as an
// unchanged copy.
//
// Everything is checked before anything is changed, and all problems are
// returned at once: a pod is either refused with every reason, or given a
// sidecar that can start.
func inject(pod *corev1.Pod, s Settings) (*corev1.Pod, error) {
	out := pod.DeepCopy()
	if !wantsInjection(pod.Annotations) || alreadyInjected(pod) {
		return out, nil
	}

	// 1. Check the annotations and the pod, collecting every error.
	o, err := ParseOptions(pod.Annotations, s)
	errs := []error{err}
	errs = append(errs, checkReservedNames(pod)...)
	errs = append(errs, checkHostNetwork(pod), checkPodLabel(pod, o.PodLabel), checkDeletionCost(pod, o.PodDeletionCost), checkOS(pod), checkRunAsRoot(pod))
	if err == nil {
		errs = append(errs, checkRunsToCompletion(pod, o.NativeSidecar, s.NativeSidecars))
	}
	if o.Port != 0 && !pod.Spec.HostNetwork {
		errs = append(errs, checkPortFree(pod, o.Port))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	// 2. A StatefulSet's pod comes back under its own name: its elector
	// waits for it rather than hand over to a pod that the same rollout
	// replaces next.
	if _, set := pod.Annotations[AnnotationReturnWait]; !set && ownedByStatefulSet(pod) {
		o.ReturnWait = o.ttl()
	}

	// 3. Add the sidecar, its volume, and the marks of an injected pod.
	if guaranteed(pod) {
		o.guarantee()
	}
	if hasPodLevelResources(pod) {
		out.Spec.Resources = o.addToPodBudget(pod)
	}
	c := sidecar(o)
	if o.NativeSidecar {
		// Just after the pod's last native sidecar, or first when it has
		// none: a mesh proxy declared earlier starts before the elector
		// (whose traffic may need it) and, as native sidecars stop in
		// reverse order, stops after it; the init containers after it, and
		// the app, can already ask the elector who leads.
		out.Spec.InitContainers = slices.Insert(out.Spec.InitContainers, nativeSidecarsEnd(pod.Spec.InitContainers), c)
	} else {
		out.Spec.Containers = append(out.Spec.Containers, c)
	}
	out.Spec.Volumes = append(out.Spec.Volumes, apiAccessVolume())
	if out.Spec.ServiceAccountName == "" {
		// A projected service-account token needs a named account. The
		// ServiceAccount admission plugin names "default" on most clusters
		// before this webhook runs; where it does not, name it here, as it
		// would, or the API server refuses the pod.
		out.Spec.ServiceAccountName = "default"
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationStatus] = StatusInjected
	// Over whatever the pod said: these describe the sidecar just added.
	out.Annotations[AnnotationInjectorVersion] = s.InjectorVersion
	out.Annotations[AnnotationInjectedImage] = o.Image
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[LabelInjected] = "true"
	return out, nil
}

// alreadyInjected reports whether the pod went through inject before. Both
// marks are required: the status annotation alone may have been copied from
// another pod's manifest, and the sidecar would then be missing.
func alreadyInjected(pod *corev1.Pod) bool {
	return pod.Annotations[AnnotationStatus] == StatusInjected && hasContainer(pod, ContainerName)
}

func hasContainer(pod *corev1.Pod, name string) bool {
	match := func(c corev1.Container) bool { return c.Name == name }
	return slices.ContainsFunc(pod.Spec.Containers, match) || slices.ContainsFunc(pod.Spec.InitContainers, match)
}

// checkReservedNames refuses a pod that already uses a name the injector
// adds: the API server would refuse the duplicate, with a message that does
// not point at the annotation.
func checkReservedNames(pod *corev1.Pod) []error {
	var errs []error
	if hasContainer(pod, ContainerName) {
		errs = append(errs, fmt.Errorf("container %q: the name is reserved for the elector sidecar; rename the container, or remove the %s annotations",
			ContainerName, AnnotationPrefix))
	}
	if slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == APIAccessVolumeName }) {
		errs = append(errs, fmt.Errorf("volume %q: the name is reserved for the elector sidecar's API credentials; rename the volume", APIAccessVolumeName))
	}
	return errs
}

// nativeSidecarsEnd returns the index just after the last native sidecar
// (an init container with restartPolicy Always) in inits, or 0.
func nativeSidecarsEnd(inits []corev1.Container) int {
	end := 0
	for i := range inits {
		if isNativeSidecar(&inits[i]) {
			end = i + 1
		}
	}
	return end
}

// checkHostNetwork refuses a pod on the node's network. The elector's
// containerPort would be a port of the node: a second replica on the same
// node could not listen (the scheduler, counting it as a hostPort, would
// leave it Pending instead), and the elector's API would be open to
// anything that reaches the node.
func checkHostNetwork(pod *corev1.Pod) error {
	if !pod.Spec.HostNetwork {
		return nil
	}
	return fmt.Errorf("spec.hostNetwork: the elector sidecar is not injected into pods on the node's network, "+
		"where its port would be taken on the node itself (a second replica on the node could not start) and its API open to the node's network; "+
		"run the pod without hostNetwork, or remove the %s annotations", AnnotationPrefix)
}

// checkOS refuses a Windows pod: the elector's image runs on Linux, and the
// API server refuses the Linux-only securityContext fields the sidecar sets
// (seccompProfile, capabilities, readOnlyRootFilesystem) in a Windows pod,
// with a message about fields the user never wrote.
func checkOS(pod *corev1.Pod) error {
	if pod.Spec.OS == nil || pod.Spec.OS.Name != corev1.Windows {
		return nil
	}
	return fmt.Errorf("spec.os.name: the elector sidecar runs on Linux only and is not injected into a %s pod; "+
		"elect from a Linux pod, or remove the %s annotations", corev1.Windows, AnnotationPrefix)
}

// checkRunAsRoot refuses a pod that runs every container as root: the
// sidecar inherits the pod's runAsUser, and with its own runAsNonRoot the
// kubelet would refuse to start it, so the pod would be admitted and then
// never become ready (CreateContainerConfigError).
func checkRunAsRoot(pod *corev1.Pod) error {
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		return nil
	}
	return fmt.Errorf("spec.securityContext.runAsUser: 0 runs every container as root, "+
		"and the elector sidecar runs as non-root (runAsNonRoot), so the kubelet would not start it; "+
		"set runAsUser: 0 on the containers that need root instead of on the pod, or remove the %s annotations", AnnotationPrefix)
}

// checkRunsToCompletion refuses a plain elector container in a pod that
// runs to completion (restartPolicy Never or OnFailure, as a Job's pods
// are): the elector never exits, so the pod would never complete and its
// Job never finish. A native sidecar is stopped once the app's containers
// have exited, so it is what such a pod needs.
func checkRunsToCompletion(pod *corev1.Pod, native, serverHasNative bool) error {
	policy := pod.Spec.RestartPolicy
	if native || policy == "" || policy == corev1.RestartPolicyAlways {
		return nil
	}
	if !serverHasNative {
		return fmt.Errorf("spec.restartPolicy: %s: the pod runs to completion, "+
			"but the elector never exits and this API server has no native sidecars (Kubernetes 1.29 and later), which stop with the app; "+
			"the pod would never complete; run the pod with restartPolicy Always, or remove the %s annotations", policy, AnnotationPrefix)
	}
	return fmt.Errorf("spec.restartPolicy: %s: the pod runs to completion, but a plain elector container never exits, so the pod would never complete; "+
		"set annotation %s to \"true\", or remove it (a native sidecar stops once the app's containers have exited)", policy, AnnotationNativeSidecar)
}

// checkPodLabel refuses a pod-label key that the pod already carries: the
// elector would overwrite it with leader or standby, and a label its
// controller selects on (app, pod-template-hash) would take the pod out of
// its ReplicaSet, which would then make another.
func checkPodLabel(pod *corev1.Pod, key string) error {
	if key == "" {
		return nil
	}
	if _, ok := pod.Labels[key]; !ok {
		return nil
	}
	return fmt.Errorf("annotation %s: the pod already has the label %q, which the elector would overwrite with leader or standby "+
		"(taking the pod out of any selector that uses it, such as its ReplicaSet's); choose a key the pod does not carry (example: example.com/role)",
		AnnotationPodLabel, key)
}

// checkDeletionCost refuses -pod-deletion-cost on a pod that sets its own
// pod-deletion-cost: the elector would overwrite it, and remove it on a
// follower.
func checkDeletionCost(pod *corev1.Pod, on bool) error {
	if _, set := pod.Annotations[election.AnnotationPodDeletionCost]; !on || !set {
		return nil
	}
	return fmt.Errorf("annotation %s: the pod already has the annotation %s, which the elector would overwrite on the leader's pod and remove on the others; "+
		"remove one of the two", AnnotationPodDeletionCost, election.AnnotationPodDeletionCost)
}

// checkPortFree refuses a port that a container of the pod declares: the
// containers share one network namespace, so the elector, or the app, would
// fail to listen. Ports a container uses without declaring them cannot be
// seen here. Its cost is linear in the pod's ports, however many there are.
func checkPortFree(pod *corev1.Pod, port int32) error {
	owner := ""
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return isTCP(p) && p.ContainerPort == port }) {
			owner = c.Name
			break
		}
	}
	if owner == "" {
		return nil
	}
	hint := "; but every TCP port is declared by the pod's containers, so declare fewer"
	if free, ok := freePort(pod, port); ok {
		hint = fmt.Sprintf(" (example: %d)", free)
	}
	if _, set := pod.Annotations[AnnotationPort]; set {
		return fmt.Errorf("annotation %s: port %d is already used by container %q; choose a free port%s", AnnotationPort, port, owner, hint)
	}
	return fmt.Errorf("the elector's default port %d is already used by container %q; set annotation %s to a free port%s", port, owner, AnnotationPort, hint)
}

// freePort returns the first port after port, wrapping round after 65535,
// that no container of the pod declares for TCP. The search visits each
// port at most once, so a pod that declares all of them gets ok false.
func freePort(pod *corev1.Pod, port int32) (free int32, ok bool) {
	var used [65536 / 64]uint64
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, p := range c.Ports {
			if isTCP(p) && p.ContainerPort >= 1 && p.ContainerPort <= 65535 {
				used[p.ContainerPort/64] |= 1 << (p.ContainerPort % 64)
			}
		}
	}
	for range 65535 {
		port = port%65535 + 1
		if used[port/64]&(1<<(port%64)) == 0 {
			return port, true
		}
	}
	return 0, false
}

// ownedByStatefulSet reports whether a StatefulSet controls the pod.
func ownedByStatefulSet(pod *corev1.Pod) bool {
	ref := metav1.GetControllerOf(pod)
	return ref != nil && ref.Kind == "StatefulSet" && strings.HasPrefix(ref.APIVersion, "apps/")
}

func isTCP(p corev1.ContainerPort) bool {
	return p.Protocol == "" || p.Protocol == corev1.ProtocolTCP
}

// sidecar builds the elector container.
func sidecar(o Options) corev1.Container {
	args := []string{
		arg(election.FlagElection, o.Election),
		arg(election.FlagHTTP, fmt.Sprintf(":%d", o.Port)),
	}
	if o.TTL != 0 {
		args = append(args, arg(election.FlagTTL, o.TTL.String()))
	}
	if o.LockType != "" {
		args = append(args, arg(election.FlagLockType, string(o.LockType)))
	}
	if o.PodLabel != "" {
		args = append(args, arg(election.FlagPodLabel, o.PodLabel))
	}
	if o.PodDeletionCost {
		args = append(args, arg(election.FlagPodDeletionCost, "true"))
	}
	if o.Race {
		args = append(args, arg(election.FlagPreferNewest, "false"))
	}
	if o.ReturnWait != 0 {
		args = append(args, arg(election.FlagReturnWait, o.ReturnWait.String()))
	}
	if o.AppHealthURL != "" {
		args = append(args, arg(election.FlagAppHealthURL, o.AppHealthURL))
	}
	if o.AppHealthPeriod != 0 {
		args = append(args, arg(election.FlagAppHealthPeriod, o.AppHealthPeriod.String()))
	}
	if o.AppHealthThreshold != 0 {
		args = append(args, arg(election.FlagAppHealthThreshold, strconv.Itoa(o.AppHealthThreshold)))
	}
	if o.NotifyURL != "" {
		args = append(args, arg(election.FlagNotifyURL, o.NotifyURL))
	}
	env := []corev1.EnvVar{
		fieldEnv(election.EnvPodName, "metadata.name"),
		fieldEnv(election.EnvPodNamespace, "metadata.namespace"),
	}
	if o.LeaderService != "" {
		args = append(args, arg(election.FlagLeaderService, o.LeaderService))
		// The address the leader lists; the downward API's, which the
		// validating webhook checks it against.
		env = append(env, fieldEnv(election.EnvPodIP, "status.podIP"))
	}

	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    o.CPURequest,
			corev1.ResourceMemory: o.MemoryRequest,
		},
	}
	if !o.CPULimit.IsZero() || !o.MemoryLimit.IsZero() {
		resources.Limits = corev1.ResourceList{}
		if !o.CPULimit.IsZero() {
			resources.Limits[corev1.ResourceCPU] = o.CPULimit
		}
		if !o.MemoryLimit.IsZero() {
			resources.Limits[corev1.ResourceMemory] = o.MemoryLimit
		}
	}

	c := corev1.Container{
		Name:  ContainerName,
		Image: o.Image,
		Args:  args,
		Env:   env,
		Ports: []corev1.ContainerPort{{
			Name:          ContainerName,
			ContainerPort: o.Port,
			Protocol:      corev1.ProtocolTCP,
		}},
		Resources: resources,
		// Readiness every 5s, 3 failures: a pod whose elector is not ready
		// leaves its Services within 15s. Liveness keeps the kubelet's
		// defaults (10s, 3 failures).
		ReadinessProbe: httpProbe(election.PathReadyz, o.Port, 5, 3),
		LivenessProbe:  httpProbe(election.PathHealthz, o.Port, 10, 3),
		// Up to 30s for the elector to come up, during which the liveness
		// probe waits rather than restarting a slow start. A native sidecar's
		// also holds back the next container until it passes, so that the
		// app can ask the elector who leads from its first moment; a plain
		// container's holds back nothing.
		StartupProbe: httpProbe(election.PathHealthz, o.Port, 1, 30),
		VolumeMounts: []corev1.VolumeMount{{
			Name:      APIAccessVolumeName,
			MountPath: APIAccessMountPath,
			ReadOnly:  true,
		}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// Enough for Pod Security "restricted", which many namespaces enforce.
		// No runAsUser: the image's USER is numeric (65532), which the
		// kubelet checks against runAsNonRoot, and a platform that assigns
		// users (OpenShift's restricted SCC) can set its own.
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if o.NativeSidecar {
		c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

func arg(name, value string) string {
	return "-" + name + "=" + value
}

func fieldEnv(name, fieldPath string) corev1.EnvVar {
	return corev1.EnvVar{
		Name: name,
		ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: fieldPath},
		},
	}
}

func httpProbe(path string, port, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(port)},
		},
		PeriodSeconds:    periodSeconds,
		FailureThreshold: failureThreshold,
	}
}

// apiAccessVolume is the sidecar's own copy of what the ServiceAccount
// admission plugin mounts, so that the elector can reach the API server even
// in a pod with automountServiceAccountToken: false (which keeps the token
// away from the app, not from the sidecar).
func apiAccessVolume() corev1.Volume {
	return corev1.Volume{
		Name: APIAccessVolumeName,
		VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr.To[int32](0o644),
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Path:              "token",
						ExpirationSeconds: ptr.To[int64](tokenExpirationSeconds),
					}},
					{ConfigMap: &corev1.ConfigMapProjection{
						LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
					}},
					{DownwardAPI: &corev1.DownwardAPIProjection{
						Items: []corev1.DownwardAPIVolumeFile{{
							Path:     "namespace",
							FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
						}},
					}},
				},
			},
		},
	}
}
