package grants

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// CacheByObject restricts the manager's cache to what the reconciler reads:
// injected pods only (webhook.LabelInjected, which the shipped
// ValidatingAdmissionPolicy k8s-elector-injected-label keeps from being
// removed or added to other pods), and only its own Roles and
// RoleBindings, so the cache stays small in a cluster with many pods. Pass
// it as cache.Options.ByObject.
func CacheByObject() map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&corev1.Pod{}:         {Label: labels.SelectorFromSet(labels.Set{webhook.LabelInjected: "true"}), Transform: trimPod},
		&rbacv1.Role{}:        {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
		&rbacv1.RoleBinding{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
	}
}

// trimPod keeps of a cached pod only what the reconciler reads (its
// service account, its elector container's name and args, whether it has
// ended, the injected label), what OutdatedPods reads (the annotations of
// keptAnnotations), what the EndpointSlice webhook checks a leader's
// address against (its IPs, node and host network: see
// webhook.ReviewEndpointSlice), and the identity the cache needs: a pod's
// spec and status are most of its size, and a large cluster has many
// injected pods.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			DeletionTimestamp: pod.DeletionTimestamp,
			// The one label the reconciler lists by.
			Labels: map[string]string{webhook.LabelInjected: pod.Labels[webhook.LabelInjected]},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: pod.Spec.ServiceAccountName,
			NodeName:           pod.Spec.NodeName,
			HostNetwork:        pod.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase, PodIPs: pod.Status.PodIPs},
	}
	for _, k := range keptAnnotations {
		if v, ok := pod.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	if c := webhook.ElectorContainer(pod); c != nil {
		// Where it was does not matter to the grant: one list is enough.
		out.Spec.Containers = []corev1.Container{{Name: c.Name, Args: c.Args}}
	}
	return out, nil
}

// keptAnnotations are the annotations trimPod keeps: those that say which
// injector injected the pod, and with which image (see OutdatedPods).
var keptAnnotations = []string{
	webhook.AnnotationStatus,
	webhook.AnnotationInjectorVersion,
	webhook.AnnotationInjectedImage,
	webhook.AnnotationImage,
}
