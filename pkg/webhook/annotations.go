package webhook

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/api/validate/content"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// AnnotationPrefix prefixes every annotation the injector reads or writes.
// Every key under it must be one the injector knows (the README's table),
// so that a typo is an error instead of a setting that silently does
// nothing.
const AnnotationPrefix = "elector.vapor.io/"

// The annotations a pod sets to ask for, and tune, its elector sidecar.
const (
	AnnotationElection           = AnnotationPrefix + "election"
	AnnotationPort               = AnnotationPrefix + "port"
	AnnotationTTL                = AnnotationPrefix + "ttl"
	AnnotationLockType           = AnnotationPrefix + "lock-type"
	AnnotationImage              = AnnotationPrefix + "image"
	AnnotationCPU                = AnnotationPrefix + "cpu"
	AnnotationMemory             = AnnotationPrefix + "memory"
	AnnotationCPULimit           = AnnotationPrefix + "cpu-limit"
	AnnotationMemoryLimit        = AnnotationPrefix + "memory-limit"
	AnnotationNativeSidecar      = AnnotationPrefix + "native-sidecar"
	AnnotationPodLabel           = AnnotationPrefix + "pod-label"
	AnnotationPodDeletionCost    = AnnotationPrefix + "pod-deletion-cost"
	AnnotationPreferNewest       = AnnotationPrefix + "prefer-newest"
	AnnotationReturnWait         = AnnotationPrefix + "return-wait"
	AnnotationAppHealthURL       = AnnotationPrefix + "app-health-url"
	AnnotationAppHealthPeriod    = AnnotationPrefix + "app-health-period"
	AnnotationAppHealthThreshold = AnnotationPrefix + "app-health-threshold"
	AnnotationNotifyURL          = AnnotationPrefix + "notify-url"
	AnnotationLeaderService      = AnnotationPrefix + "leader-service"

	// AnnotationStatus is written by the injector, never by users: StatusInjected
	// marks a pod whose sidecar is in place, so a reinvoked webhook leaves it be.
	AnnotationStatus = AnnotationPrefix + "status"
	StatusInjected   = "injected"

	// AnnotationInjectorVersion and AnnotationInjectedImage are written by
	// the injector, never by users: the injector's version and the image of
	// the sidecar it added, so that the pods injected by an older release
	// can be found and rolled. inject overwrites what a pod sets itself.
	AnnotationInjectorVersion = AnnotationPrefix + "injector-version"
	AnnotationInjectedImage   = AnnotationPrefix + "injected-image"

	// LabelInjected (value "true") is set on every injected pod. It is a label,
	// not an annotation, so that the RBAC reconciler can select injected pods.
	LabelInjected = AnnotationPrefix + "injected"
)

// annotationDoc documents one annotation for users; the README table is
// generated from knownAnnotations.
type annotationDoc struct {
	Key     string
	Example string
	Help    string
}

// knownAnnotations lists every key the injector knows, in the order errors
// are reported and the README lists them.
var knownAnnotations = []annotationDoc{
	{AnnotationElection, "my-app", "Election name, and the name of the lock object. Required; its presence asks for the sidecar."},
	{AnnotationPort, "4040", "Port of the elector's HTTP API (default: the injector's, 4040). Must not be a containerPort of the pod."},
	{AnnotationTTL, "10s",
		"Lease duration, a whole number of seconds, at least " + election.MinTTL.String() + " (default: the elector's, " + election.DefaultTTL.String() + ")."},
	{AnnotationLockType, "leases",
		"Lock object kind: leases, configmaps or endpoints, if the injector's `-allowed-lock-types` allows it (by default leases and configmaps) " +
			"(default: the injector's, else leases)."},
	{AnnotationImage, "ghcr.io/vapor-ware/k8s-elector:v1.0.0", "Elector image (default: the injector's)."},
	{AnnotationCPU, "10m", "CPU request of the sidecar (default: the injector's, 10m). Also raises the CPU limit when larger than it."},
	{AnnotationMemory, "32Mi", "Memory request of the sidecar (default: the injector's, 24Mi). Also raises the memory limit when larger than it."},
	{AnnotationCPULimit, "200m", "CPU limit of the sidecar, 0 for none (default: the injector's, 100m). Must not be below the CPU request."},
	{AnnotationMemoryLimit, "128Mi", "Memory limit of the sidecar, 0 for none (default: the injector's, 64Mi). Must not be below the memory request."},
	{AnnotationNativeSidecar, "false",
		"true: an init container with restartPolicy Always, after the pod's own native sidecars and started before the app; " +
			"false: a plain container (default: true when the API server supports native sidecars)."},
	{AnnotationPodLabel, "example.com/role",
		"Label key the elector sets to leader or standby on its own pod (default: none). " +
			"Must not be a label the pod already has, such as app or pod-template-hash."},
	{AnnotationPodDeletionCost, "true",
		"true: the leader keeps its pod annotated " + election.AnnotationPodDeletionCost + "=" + election.LeaderDeletionCost +
			", so that a Deployment's rollout deletes it after the other old pods: one handover per rollout when maxUnavailable is above 0. " +
			"Its service account gets pods patch, narrowed by the policy k8s-elector-pod-label to that annotation on its own pod. " +
			"The pod must not set that annotation itself (default: false)."},
	{AnnotationPreferNewest, "false",
		"true: the newest pod is named the successor on the lock and takes it first after a release, so that a rollout hands over once, to a new pod; " +
			"false: every follower races for a released lock (default: true)."},
	{AnnotationReturnWait, "0s",
		"How long the other pods leave the lock to a leader that shuts down, for it to come back under its own name: " +
			"one handover per StatefulSet rollout, after a gap of the pod's restart; 0s hands over at once. " +
			"At most the TTL (default: the TTL for a StatefulSet's pods, else 0s)."},
	{AnnotationAppHealthURL, "http://localhost:8080/healthz",
		"The application's health endpoint, probed by the elector: a pod whose application does not answer it with 2xx or 3xx does not take the lock, " +
			"and a leader whose application fails it releases the lock to a healthy pod (default: none)."},
	{AnnotationAppHealthPeriod, "1s",
		"How often the health endpoint is probed, and how long a probe may take; at least " + election.MinAppHealthPeriod.String() +
			" (default: the elector's, " + election.DefaultAppHealthPeriod.String() + "). Needs " + AnnotationAppHealthURL + "."},
	{AnnotationAppHealthThreshold, "3",
		"How many failed probes in a row make the application unhealthy (default: the elector's, " + strconv.Itoa(election.DefaultAppHealthThreshold) +
			"). Needs " + AnnotationAppHealthURL + "."},
	{AnnotationNotifyURL, "http://localhost:8080/elector",
		"A URL of the application that the elector POSTs its status document to (the JSON of GET /, with is_leader and epoch) at start and on every change, " +
			"retrying with backoff, newest document first: for an application that cannot hold /watch open (default: none)."},
	{AnnotationLeaderService, "my-app-leader",
		"A Service, without a selector and annotated " + election.AnnotationElection + " with this election, whose endpoints the elector keeps: " +
			"the leader lists its own pod's IP alone in the EndpointSlice of the Service's name, and withdraws it before it hands over. " +
			"Its service account gets that Service get and that EndpointSlice get, create and update, " +
			"each write checked by the injector's webhook (see Leader-only routing) (default: none)."},
	{AnnotationStatus, StatusInjected, "Written by the injector once the sidecar is in place. Do not set it."},
	{AnnotationInjectorVersion, "v1.2.0",
		"Written by the injector: its version when it injected the sidecar; a value the pod sets is overwritten. " +
			"The injector counts the live pods of other versions in k8s_elector_injector_outdated_pods (see Upgrading injected pods)."},
	{AnnotationInjectedImage, "ghcr.io/vapor-ware/k8s-elector:v1.2.0",
		"Written by the injector: the image of the sidecar it injected; a value the pod sets is overwritten."},
}

// injectorWritten reports whether key is one of the annotations the
// injector writes: they say what was done to a pod, and ask for nothing.
func injectorWritten(key string) bool {
	return key == AnnotationStatus || key == AnnotationInjectorVersion || key == AnnotationInjectedImage
}

// Options is the elector sidecar of one pod: the injector's Settings
// overridden by the pod's annotations.
type Options struct {
	Election string
	// Port is zero when its annotation is invalid, so that the pod's ports
	// are not checked against a port the user did not ask for.
	Port int32
	// TTL is passed to the elector only when non-zero.
	TTL time.Duration
	// LockType is passed to the elector only when non-empty.
	LockType      election.LockType
	Image         string
	CPURequest    resource.Quantity
	MemoryRequest resource.Quantity
	// CPULimit and MemoryLimit are not set on the container when zero.
	CPULimit      resource.Quantity
	MemoryLimit   resource.Quantity
	NativeSidecar bool
	// PodLabel is passed to the elector only when non-empty.
	PodLabel string
	// PodDeletionCost is the elector's -pod-deletion-cost.
	PodDeletionCost bool
	// Race has every follower race for a released lock: the elector's
	// -prefer-newest=false.
	Race bool
	// AppHealthURL, AppHealthPeriod and AppHealthThreshold are passed to
	// the elector only when set.
	AppHealthURL       string
	AppHealthPeriod    time.Duration
	AppHealthThreshold int
	// NotifyURL is the elector's -notify-url, passed only when set.
	NotifyURL string
	// LeaderService is the elector's -leader-service, passed only when
	// set, with the pod's IP in $POD_IP.
	LeaderService string
	// ReturnWait is the elector's -return-wait, passed only when non-zero.
	// inject sets it to the TTL for a StatefulSet's pod, unless the
	// annotation says otherwise.
	ReturnWait time.Duration
}

// wantsInjection reports whether any annotation asks for the sidecar. Any key
// under the prefix counts, not only election: a pod with a misspelt election
// key must get an error, not silently go without a sidecar. The annotations
// the injector writes do not count: a pod copied from an injected pod's
// manifest carries them without asking for anything.
func wantsInjection(annotations map[string]string) bool {
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) && !injectorWritten(k) {
			return true
		}
	}
	return false
}

// ParseOptions reads the pod's annotations over the defaults in s. It checks
// every annotation and returns all the errors joined, so that a user fixes
// them in one go rather than one per rejected rollout. With an error, the
// Options are incomplete and must not be used to build a sidecar.
func ParseOptions(annotations map[string]string, s Settings) (Options, error) {
	o := Options{
		Port:          s.Port,
		TTL:           s.TTL,
		LockType:      s.LockType,
		Image:         s.ElectorImage,
		CPURequest:    s.CPURequest.DeepCopy(),
		MemoryRequest: s.MemoryRequest.DeepCopy(),
		CPULimit:      s.CPULimit.DeepCopy(),
		MemoryLimit:   s.MemoryLimit.DeepCopy(),
		NativeSidecar: s.NativeSidecars,
	}
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("annotation %s: "+format, append([]any{key}, args...)...))
	}

	// The election annotation is required even when absent, so it is checked
	// outside the loop over the annotations that are set.
	o.Election = annotations[AnnotationElection]
	if err := election.ValidateName(o.Election); err != nil {
		fail(AnnotationElection, "%w", err)
	}

	for _, a := range knownAnnotations {
		v, ok := annotations[a.Key]
		if !ok {
			continue
		}
		switch a.Key {
		case AnnotationPort:
			port, err := strconv.ParseInt(v, 10, 32)
			o.Port = 0
			switch {
			case err != nil:
				fail(a.Key, "%q is not a port number (example: %s)", v, a.Example)
			case port < 1 || port > 65535:
				fail(a.Key, "%q is not a port number in 1-65535 (example: %s)", v, a.Example)
			default:
				o.Port = int32(port)
			}
		case AnnotationTTL:
			ttl, err := time.ParseDuration(v)
			if err != nil {
				fail(a.Key, "%q is not a duration (example: %s)", v, a.Example)
				break
			}
			if err := validateTTL(ttl); err != nil {
				// The annotation, not the elector's -ttl, is what to fix.
				fail(a.Key, "%w", errors.Unwrap(err))
				break
			}
			o.TTL = ttl
		case AnnotationLockType:
			t, err := election.ParseLockType(v)
			if err != nil {
				fail(a.Key, "%w", err)
				break
			}
			if !s.lockTypeAllowed(t) {
				fail(a.Key, "%q is not allowed by this injector (allowed: %s); "+
					"use one of those, or ask the cluster admin to add it to the injector's -allowed-lock-types flag",
					v, joinLockTypes(s.AllowedLockTypes))
				break
			}
			o.LockType = t
		case AnnotationImage:
			if err := validateImage(v); err != nil {
				fail(a.Key, "%w", err)
				break
			}
			o.Image = v
		case AnnotationCPU, AnnotationMemory, AnnotationCPULimit, AnnotationMemoryLimit:
			q, err := parseQuantity(v, a.Example)
			if err != nil {
				fail(a.Key, "%w", err)
				break
			}
			switch a.Key {
			case AnnotationCPU:
				o.CPURequest = q
			case AnnotationMemory:
				o.MemoryRequest = q
			case AnnotationCPULimit:
				o.CPULimit = q
			case AnnotationMemoryLimit:
				o.MemoryLimit = q
			}
		case AnnotationNativeSidecar, AnnotationPreferNewest, AnnotationPodDeletionCost:
			// Only the two spellings, not strconv.ParseBool's "1" or "T":
			// a value read back from a manifest should mean one thing.
			if v != "true" && v != "false" {
				fail(a.Key, "%q must be true or false (example: %s)", v, a.Example)
				break
			}
			switch a.Key {
			case AnnotationNativeSidecar:
				o.NativeSidecar = v == "true"
			case AnnotationPreferNewest:
				o.Race = v == "false"
			case AnnotationPodDeletionCost:
				o.PodDeletionCost = v == "true"
			}
		case AnnotationAppHealthURL, AnnotationNotifyURL:
			validate, field := election.ValidateAppHealthURL, &o.AppHealthURL
			if a.Key == AnnotationNotifyURL {
				validate, field = election.ValidateNotifyURL, &o.NotifyURL
			}
			if err := validate(v); err != nil {
				fail(a.Key, "%w", err)
				break
			}
			*field = v
		case AnnotationAppHealthPeriod:
			d, err := time.ParseDuration(v)
			switch {
			case err != nil:
				fail(a.Key, "%q is not a duration (example: %s)", v, a.Example)
			case d < election.MinAppHealthPeriod:
				fail(a.Key, "%q is under the minimum %s (example: %s)", v, election.MinAppHealthPeriod, a.Example)
			default:
				o.AppHealthPeriod = d
			}
		case AnnotationReturnWait:
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > 0 && d < time.Millisecond {
				fail(a.Key, "%q is not 0s or a duration of 1ms or more (example: %s, or 10s)", v, a.Example)
				break
			}
			o.ReturnWait = d
		case AnnotationLeaderService:
			// A Service's name, which the EndpointSlice shares.
			if msgs := validation.IsDNS1035Label(v); len(msgs) > 0 {
				fail(a.Key, "%q is not a Service name: %s; name the Service whose endpoints the leader keeps (example: %s)",
					v, strings.Join(msgs, "; "), a.Example)
				break
			}
			o.LeaderService = v
		case AnnotationAppHealthThreshold:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				fail(a.Key, "%q is not a whole number in 1-100 (example: %s)", v, a.Example)
				break
			}
			o.AppHealthThreshold = n
		case AnnotationPodLabel:
			if msgs := content.IsLabelKey(v); len(msgs) > 0 {
				fail(a.Key, "%q is not a valid label key: %s (example: %s)", v, strings.Join(msgs, "; "), a.Example)
				break
			}
			// The elector would overwrite the injector's own label with
			// leader or standby, and the reconciler would lose the pod.
			if v == LabelInjected {
				fail(a.Key, "%q is the injector's own label; choose another key (example: %s)", v, a.Example)
				break
			}
			o.PodLabel = v
		}
	}

	if ttl := o.ttl(); o.ReturnWait > ttl {
		fail(AnnotationReturnWait,
			"%s is over the TTL %s; a leader that does not come back must not be waited for longer than one that crashed: lower it, or raise %s",
			o.ReturnWait, ttl, AnnotationTTL)
	}

	if o.AppHealthURL == "" {
		for _, key := range []string{AnnotationAppHealthPeriod, AnnotationAppHealthThreshold} {
			if _, set := annotations[key]; set {
				fail(key, "has no effect without %s; set it (example: http://localhost:8080/healthz), or remove %s", AnnotationAppHealthURL, key)
			}
		}
	}

	// A request above the limit is an invalid pod. A request annotation
	// carries the injector's default limit up with it; a limit the pod set
	// itself is the pod's mistake, reported with both values.
	for _, r := range []struct {
		request, limit       *resource.Quantity
		requestKey, limitKey string
	}{
		{&o.CPURequest, &o.CPULimit, AnnotationCPU, AnnotationCPULimit},
		{&o.MemoryRequest, &o.MemoryLimit, AnnotationMemory, AnnotationMemoryLimit},
	} {
		if r.limit.IsZero() || r.request.Cmp(*r.limit) <= 0 {
			continue
		}
		if _, set := annotations[r.limitKey]; set {
			fail(r.limitKey,
				"%s is below the request %s (annotation %s, or the injector's default); raise the limit, lower the request, or set the limit to 0 for none",
				r.limit.String(), r.request.String(), r.requestKey)
			continue
		}
		*r.limit = r.request.DeepCopy()
	}

	var unknown []string
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationPrefix) && !slices.ContainsFunc(knownAnnotations, func(a annotationDoc) bool { return a.Key == k }) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	// A few are listed, so that the message stays readable whatever the pod.
	for _, k := range unknown[:min(len(unknown), maxUnknownListed)] {
		errs = append(errs, fmt.Errorf("annotation %s is not a known annotation (known: %s)", k, strings.Join(annotationKeys(), ", ")))
	}
	if n := len(unknown) - maxUnknownListed; n > 0 {
		errs = append(errs, fmt.Errorf("and %d more unknown annotations under %s", n, AnnotationPrefix))
	}

	return o, errors.Join(errs...)
}

// ttl is the lease duration the elector will run with.
func (o Options) ttl() time.Duration {
	if o.TTL != 0 {
		return o.TTL
	}
	return election.DefaultTTL
}

// maxUnknownListed is how many unknown annotation keys an error names.
const maxUnknownListed = 5

// annotationKeys returns the keys of knownAnnotations, for error messages.
func annotationKeys() []string {
	keys := make([]string, len(knownAnnotations))
	for i, a := range knownAnnotations {
		keys[i] = a.Key
	}
	return keys
}

// validateTTL applies the elector's own timing rules, with the renew deadline
// and retry period it will derive from ttl, so that a pod is refused here
// instead of crash looping on the elector's flag validation.
func validateTTL(ttl time.Duration) error {
	renewDeadline, retryPeriod := election.DefaultTimings(ttl)
	return election.ValidateTimings(ttl, renewDeadline, retryPeriod)
}

// validateImage rejects what can only fail at pull time. Full reference
// parsing is left to the kubelet, which reports it on the pod.
func validateImage(image string) error {
	if image == "" || strings.ContainsFunc(image, unicode.IsSpace) {
		return fmt.Errorf("%q must be a non-empty image reference without whitespace (example: ghcr.io/vapor-ware/k8s-elector:v1.0.0)", image)
	}
	return nil
}

// parseQuantity parses a non-negative resource quantity; the API server
// refuses negative requests, so they are refused here with the annotation's
// name in the message.
func parseQuantity(v, example string) (resource.Quantity, error) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("%q is not a resource quantity (example: %s)", v, example)
	}
	if q.Sign() < 0 {
		return resource.Quantity{}, fmt.Errorf("%q must not be negative (example: %s)", v, example)
	}
	return q, nil
}
