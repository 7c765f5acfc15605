package attack

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// TestEveryPortPodCannotWedgeTheInjector: a pod that declares every TCP
// port leaves the elector no port. The first release searched for a free
// one forever, holding a webhook goroutine and a CPU per such pod, so a
// deployer could stall every elector pod of the cluster with a few of
// them. Each must be refused with a reason at once (the webhook's
// failurePolicy Fail and its 5s timeout turn a hang into a different
// error), and the next annotated pod is injected as if nothing happened.
func TestEveryPortPodCannotWedgeTheInjector(t *testing.T) {
	a := newApp(t)
	a.account("web")
	ctx := ctxFor(t, 2*time.Minute)

	// Protobuf keeps the 65535 ports well inside the API server's limit on
	// a request body; the webhook still gets them as JSON.
	cfg := *a.deployerConfig
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	deployer, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	wedge := func(name string) *corev1.Pod {
		p := plainPod(name, "web", map[string]string{webhook.AnnotationElection: "web"})
		ports := make([]corev1.ContainerPort, 0, 65535)
		for port := int32(1); port <= 65535; port++ {
			ports = append(ports, corev1.ContainerPort{ContainerPort: port, Protocol: corev1.ProtocolTCP})
		}
		p.Spec.Containers[0].Ports = ports
		return p
	}

	// Several, one after another: each costs the API server seconds of
	// its own work before the webhook is called, which, sent at once on a
	// small machine, could outlast the API server's own request timeout
	// and hide the webhook's answer.
	for i := range 2 {
		start := time.Now()
		_, err := deployer.CoreV1().Pods(a.ns).Create(ctx, wedge(fmt.Sprintf("wedge-%d", i)), metav1.CreateOptions{})
		t.Logf("wedge pod %d answered in %s", i, time.Since(start).Round(time.Millisecond))
		// Either answer is the injector's, with its reason: the review is
		// too large to read (the managedFields the API server records list
		// every port again), or the pod leaves the elector no port.
		refused(t, "a pod declaring every TCP port", err, byWebhook("every TCP port"), byWebhook("too large"))
	}

	// The next pod goes through the same webhook, once: a wedged injector
	// would time out and, with failurePolicy Fail, refuse it.
	p, err := a.createPod("web-0", "web", map[string]string{webhook.AnnotationElection: "web"})
	if err != nil {
		t.Fatalf("the annotated pod after the wedge pods: %v", err)
	}
	if p.Labels[webhook.LabelInjected] != "true" {
		t.Errorf("the annotated pod after the wedge pods was not injected: labels %v", p.Labels)
	}
}
