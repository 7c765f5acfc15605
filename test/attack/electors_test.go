package attack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
	"github.com/vapor-ware/k8s-elector/internal/podrunner"
	"github.com/vapor-ware/k8s-elector/pkg/election"
	"github.com/vapor-ware/k8s-elector/pkg/webhook"
)

// sidecar is the elector of one pod, run as a local process the way the
// kubelet would run its container.
type sidecar struct {
	*podrunner.Pod
	pod  string
	addr string
	log  string // the elector's log file
}

// runSidecar starts the elector binary with exactly the args and
// environment the injector wrote into pod, the downward API filled in,
// and a token of the pod's service account bound to the pod.
func runSidecar(t *testing.T, pod *corev1.Pod) *sidecar {
	t.Helper()
	c := webhook.ElectorContainer(pod)
	if c == nil {
		t.Fatalf("pod %s has no %s container", pod.Name, webhook.ContainerName)
	}
	p, err := podrunner.StartSidecar(ctxFor(t, 10*time.Second), env.Client, env.Config, filepath.Join(bin, "elector"), t.TempDir(), pod, c)
	if err != nil {
		t.Fatal(err)
	}
	s := &sidecar{Pod: p, pod: pod.Name, addr: p.Addr, log: p.LogPath}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			log, _ := os.ReadFile(s.log)
			t.Logf("elector of %s (%s):\n%s", pod.Name, strings.Join(c.Args, " "), log)
		}
	})
	return s
}

// stop sends SIGTERM, as the kubelet does when a pod is deleted, and waits
// for the elector to exit.
func (s *sidecar) stop() { _ = s.Stop(20 * time.Second) }

func (s *sidecar) status() (election.Status, error) {
	return controlplane.ElectorStatus(context.Background(), nil, s.addr)
}

// leader waits until exactly one of the sidecars leads, and returns it.
func leader(t *testing.T, sidecars ...*sidecar) *sidecar {
	t.Helper()
	var found *sidecar
	eventually(t, 60*time.Second, func() error {
		found = nil
		for _, s := range sidecars {
			st, err := s.status()
			if err != nil {
				continue
			}
			if st.IsLeader {
				if found != nil {
					return fmt.Errorf("%s and %s both lead", found.pod, s.pod)
				}
				found = s
			}
		}
		if found == nil {
			return fmt.Errorf("no one leads")
		}
		return nil
	})
	return found
}

// wantLabels waits until each pod carries key=value as given.
func wantLabels(t *testing.T, ns, key string, want map[string]string) {
	t.Helper()
	eventually(t, 60*time.Second, func() error {
		for pod, v := range want {
			p, err := env.Client.CoreV1().Pods(ns).Get(ctxFor(t, 10*time.Second), pod, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Labels[key] != v {
				return fmt.Errorf("pod %s has %s=%q, want %q", pod, key, p.Labels[key], v)
			}
		}
		return nil
	})
}

// wantEvent waits for a LeaderElection Event about the lock object name
// that the elector posted.
func wantEvent(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		events, err := env.Client.CoreV1().Events(ns).List(ctxFor(t, 10*time.Second), metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": name, "reason": "LeaderElection"}.String(),
		})
		if err != nil {
			return err
		}
		if len(events.Items) == 0 {
			return fmt.Errorf("no LeaderElection Event about %s/%s", ns, name)
		}
		return nil
	})
}

// electAndHandOver runs the whole of an election with the grants the
// injector made for it: two injected pods of one account, their electors
// run with the pods' own tokens; one leads and labels its pod leader and
// the other standby, posts an Event, and once stopped hands over to the
// other, which relabels both pods.
func electAndHandOver(t *testing.T, a *app, sa, name string, annotations map[string]string) []*sidecar {
	t.Helper()
	ann := map[string]string{webhook.AnnotationElection: name, webhook.AnnotationPodLabel: roleKey, webhook.AnnotationTTL: "4s"}
	for k, v := range annotations {
		ann[k] = v
	}
	p0 := a.pod(name+"-0", sa, ann)
	p1 := a.pod(name+"-1", sa, ann)
	s0, s1 := runSidecar(t, p0), runSidecar(t, p1)
	first := leader(t, s0, s1)
	second := s1
	if first == s1 {
		second = s0
	}
	wantLabels(t, a.ns, roleKey, map[string]string{first.pod: "leader", second.pod: "standby"})
	wantEvent(t, a.ns, name)

	first.stop()
	if got := leader(t, second); got != second {
		t.Fatalf("%s did not take over", second.pod)
	}
	wantLabels(t, a.ns, roleKey, map[string]string{second.pod: "leader", first.pod: "standby"})
	return []*sidecar{s0, s1}
}
