package injector

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/pkg/grants"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

func TestAnnotatedPodIsInjected(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	pod, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 10*time.Second),
		electorPod("annotated", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := webhook.ElectorContainer(pod)
	if c == nil {
		t.Fatalf("pod has no %s container: %+v", webhook.ContainerName, pod.Spec)
	}
	if c.Image != testImage || c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar = image %s, restartPolicy %v; want %s as a native sidecar", c.Image, c.RestartPolicy, testImage)
	}
	if pod.Labels[webhook.LabelInjected] != "true" || pod.Annotations[webhook.AnnotationStatus] != webhook.StatusInjected {
		t.Errorf("pod is not marked injected: labels %v, annotations %v", pod.Labels, pod.Annotations)
	}
	if n := requests.count(ns, "annotated"); n < 1 {
		t.Errorf("the webhook saw %d requests for the pod, want at least 1", n)
	}
}

func TestAnnotatedDeploymentYieldsInjectedPods(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	pod := electorPod("", "app", map[string]string{webhook.AnnotationElection: "my-deployment"})
	labels := map[string]string{"app": "my-deployment"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "my-deployment"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: pod.Annotations},
				Spec:       pod.Spec,
			},
		},
	}
	if _, err := env.Client.AppsV1().Deployments(ns).Create(ctxFor(t, 10*time.Second), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		pods, err := env.Client.CoreV1().Pods(ns).List(ctxFor(t, 5*time.Second), metav1.ListOptions{LabelSelector: "app=my-deployment"})
		if err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d pods, want 2", len(pods.Items))
		}
		for _, p := range pods.Items {
			if webhook.ElectorContainer(&p) == nil {
				return fmt.Errorf("pod %s has no sidecar", p.Name)
			}
		}
		return nil
	})
}

func TestUnannotatedPodIsNotSent(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	for name, annotations := range map[string]map[string]string{
		"no-annotations": nil,
		// The status annotation alone is the injector's, not a request.
		"other-annotations": {"example.com/other": "x", webhook.AnnotationStatus: webhook.StatusInjected},
	} {
		pod, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 10*time.Second), electorPod(name, "app", annotations), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if webhook.ElectorContainer(pod) != nil || len(pod.Spec.InitContainers) != 0 || pod.Labels[webhook.LabelInjected] != "" {
			t.Errorf("%s: an unannotated pod was changed: %+v", name, pod.Spec)
		}
		if n := requests.count(ns, name); n != 0 {
			t.Errorf("%s: the webhook saw %d requests for a pod without elector annotations; matchConditions should keep them away", name, n)
		}
	}
}

func TestKubeSystemIsNotInjected(t *testing.T) {
	ctx := ctxFor(t, 10*time.Second)
	name := fmt.Sprintf("annotated-%d", time.Now().UnixNano()%1e6)
	pod, err := env.Client.CoreV1().Pods("kube-system").Create(ctx,
		electorPod(name, "", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Pods("kube-system").Delete(ctxFor(t, 10*time.Second), name, metav1.DeleteOptions{})
	})
	if webhook.ElectorContainer(pod) != nil {
		t.Errorf("a pod in kube-system was injected")
	}
	if n := requests.count("kube-system", name); n != 0 {
		t.Errorf("the webhook saw %d requests for a pod in kube-system", n)
	}
}

func TestBadAnnotationsAreDenied(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	tests := []struct {
		annotations map[string]string
		want        string
	}{
		{map[string]string{"elector.vapor.io/elektion": "my-app"}, "annotation elector.vapor.io/elektion is not a known annotation"},
		{map[string]string{"elector.vapor.io/port": "4040"}, "annotation elector.vapor.io/election: is required (example: my-app)"},
		{map[string]string{webhook.AnnotationElection: "My_App"}, `annotation elector.vapor.io/election: "My_App" is not a valid Kubernetes object name`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationTTL: "5x"}, `annotation elector.vapor.io/ttl: "5x" is not a duration (example: 10s)`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationPort: "99999"}, `annotation elector.vapor.io/port: "99999" is not a port number in 1-65535`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationLockType: "secrets"}, `annotation elector.vapor.io/lock-type: "secrets" is not a lock type`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationCPU: "lots"}, `annotation elector.vapor.io/cpu: "lots" is not a resource quantity`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationNativeSidecar: "yes"}, `annotation elector.vapor.io/native-sidecar: "yes" must be true or false`},
		{map[string]string{webhook.AnnotationElection: "a", webhook.AnnotationPodLabel: "bad key!"}, `annotation elector.vapor.io/pod-label: "bad key!" is not a valid label key`},
	}
	for i, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 10*time.Second),
				electorPod(fmt.Sprintf("bad-%d", i), "app", tt.annotations), metav1.CreateOptions{})
			if err == nil {
				t.Fatal("the pod was admitted")
			}
			msg := err.Error()
			if !strings.Contains(msg, `admission webhook "inject.elector.vapor.io" denied the request`) || !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q, want the webhook's denial containing %q", msg, tt.want)
			}
		})
	}
}

func TestDryRunCreatesNoRBAC(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 20*time.Second)
	pod, err := env.Client.CoreV1().Pods(ns).Create(ctx,
		electorPod("dry", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	if webhook.ElectorContainer(pod) == nil {
		t.Errorf("the dry-run pod was not injected")
	}
	// Nothing is there to reconcile: once the reconciler has caught up,
	// app has no Role.
	syncReconciler(t, ns)
	_, errRole := env.Client.RbacV1().Roles(ns).Get(ctx, grants.RoleName("app"), metav1.GetOptions{})
	_, errBinding := env.Client.RbacV1().RoleBindings(ns).Get(ctx, grants.RoleName("app"), metav1.GetOptions{})
	if !apierrors.IsNotFound(errRole) || !apierrors.IsNotFound(errBinding) {
		t.Fatalf("after a dry run: Role: %v, RoleBinding: %v; want both not found", errRole, errBinding)
	}
	if _, err := env.Client.CoreV1().Pods(ns).Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry-run pod exists: %v", err)
	}
}

func TestRestrictedNamespaceAdmitsInjectedPod(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 10*time.Second)
	n, err := env.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["pod-security.kubernetes.io/enforce"] = "restricted"
	if _, err := env.Client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Pod Security is on: a non-compliant pod is refused.
	bad := electorPod("privileged", "app", nil)
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = new(true)
	if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a non-compliant pod: err = %v, want a PodSecurity violation", err)
	}
	pod, err := env.Client.CoreV1().Pods(ns).Create(ctx,
		electorPod("restricted", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("an injected compliant pod was refused: %v", err)
	}
	if webhook.ElectorContainer(pod) == nil {
		t.Errorf("the pod was not injected")
	}
}

// TestWedgePodIsDeniedAndTheNextInjected: a pod that declares every TCP
// port once made the injector loop forever, and its review (each port with
// its managedFields) is larger than controller-runtime reads. Through the
// injector binary, wired as cmd/injector wires it, the API server gets a
// denial naming the cause within the webhook's timeoutSeconds (a hang would
// be a "context deadline exceeded" instead), and the next pod is injected
// on the first try.
func TestWedgePodIsDeniedAndTheNextInjected(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	inj := startInjectorWithEnvtestCert(t)
	createInjected(t, ns, "before") // retries until the API server reaches the binary

	wedge := electorPod("wedge", "app", map[string]string{webhook.AnnotationElection: "my-app"})
	for p := int32(1); p <= 65535; p++ {
		wedge.Spec.Containers[0].Ports = append(wedge.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: p})
	}
	_, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 60*time.Second), wedge, metav1.CreateOptions{})
	if err == nil {
		t.Fatal("the wedge pod was admitted")
	}
	if msg := err.Error(); !strings.Contains(msg, `admission webhook "inject.elector.vapor.io" denied the request`) ||
		!strings.Contains(msg, "the pod is too large for the elector injector") ||
		!strings.Contains(msg, fmt.Sprintf("above the injector's limit of %d bytes", webhook.MaxReviewSize)) {
		t.Fatalf("error = %.500q; want the webhook's denial for the pod's size", msg)
	}

	pod, err := env.Client.CoreV1().Pods(ns).Create(ctxFor(t, 30*time.Second),
		electorPod("after", "app", map[string]string{webhook.AnnotationElection: "my-app"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the pod after the wedge pod: %v", err)
	}
	if webhook.ElectorContainer(pod) == nil {
		t.Errorf("the pod after the wedge pod was not injected")
	}
	inj.terminate(t)
}

// startInjectorWithEnvtestCert runs the injector binary with envtest's
// serving certificate (-cert-management=external), and the flags of extra
// after its own, and points the webhook configuration at it until the test
// ends.
func startInjectorWithEnvtestCert(t *testing.T, extra ...string) *process {
	t.Helper()
	opts := env.Env.WebhookInstallOptions
	certDir := t.TempDir()
	for _, f := range []string{"tls.key", "tls.crt"} {
		data, err := os.ReadFile(filepath.Join(opts.LocalServingCertDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	token, err := controlplane.Token(ctxFor(t, 10*time.Second), env.Client, systemNamespace, controlplane.InjectorAccount, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	inj := startInjector(t, append([]string{
		"-kubeconfig=" + kubeconfigFor(t, token),
		"-namespace=" + systemNamespace,
		"-elector-image=" + testImage,
		"-cert-management=external",
		fmt.Sprintf("-webhook-port=%d", port),
		"-cert-dir=" + certDir,
		"-metrics-bind-address=0",
		fmt.Sprintf("-health-probe-bind-address=127.0.0.1:%d", freePort(t)),
		"-leader-elect",
	}, extra...)...)
	whc, err := shippedWebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://localhost:%d%s", port, *whc.Webhooks[0].ClientConfig.Service.Path)
	whc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: opts.LocalServingCAData}
	swapWebhookConfiguration(t, whc)
	return inj
}

// TestQuotaAndQoS: in a namespace whose ResourceQuota counts CPU and memory
// limits, an injected pod is admitted (the sidecar has both limits), and a
// Guaranteed pod stays Guaranteed.
func TestQuotaAndQoS(t *testing.T) {
	ns := env.Namespace(t)
	serviceAccount(t, ns, "app")
	ctx := ctxFor(t, 30*time.Second)
	limitsQuota(t, ns)

	guaranteed := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	burstable := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	for name, tt := range map[string]struct {
		resources corev1.ResourceRequirements
		qos       corev1.PodQOSClass
	}{
		"guaranteed": {guaranteed, corev1.PodQOSGuaranteed},
		"burstable":  {burstable, corev1.PodQOSBurstable},
	} {
		p := electorPod(name, "app", map[string]string{webhook.AnnotationElection: "my-app"})
		p.Spec.Containers[0].Resources = tt.resources
		pod, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("%s: the injected pod was refused under a limits quota: %v", name, err)
			continue
		}
		if webhook.ElectorContainer(pod) == nil {
			t.Errorf("%s: the pod was not injected", name)
		}
		if pod.Status.QOSClass != tt.qos {
			t.Errorf("%s: QoS class %s, want %s", name, pod.Status.QOSClass, tt.qos)
		}
	}
}
