package grants

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/vapor-ware/k8s-elector/pkg/election"
)

func TestElectorOf(t *testing.T) {
	tests := []struct {
		name    string
		pod     corev1.Pod
		want    Elector
		found   bool
		wantErr string
	}{
		{"no elector container", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Args: []string{"-election=a"}}}}}, Elector{}, false, ""},
		{"native sidecar, lock type absent means leases, annotations and env ignored",
			podWithElector("", true, "-election=a", "-http=:4040"), Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"plain container, every flag", podWithElector("", false, "-election=a", "-lock-type=configmaps", "-pod-label=example.com/role"),
			Elector{Election: "a", LockType: election.LockConfigMaps, PodLabel: "example.com/role"}, true, ""},
		{"double dash, last wins as in Go's flag package", podWithElector("", true, "-election=a", "--election=b", "--lock-type=configmaps"),
			Elector{Election: "b", LockType: election.LockConfigMaps}, true, ""},
		{"a value in the next argument is not read", podWithElector("", true, "-election", "a"), Elector{LockType: election.LockLeases}, true, "is required"},
		{"three dashes are not a flag", podWithElector("", true, "-election=a", "---election=b"), Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"invalid lock type", podWithElector("", true, "-election=a", "-lock-type=secrets"), Elector{Election: "a", LockType: election.LockLeases}, true, `"secrets" is not a lock type`},
		{"invalid election", podWithElector("", true, "-election=A_b"), Elector{Election: "A_b", LockType: election.LockLeases}, true, "not a valid Kubernetes object name"},
		{"pod-deletion-cost, as the injector writes it", podWithElector("", true, "-election=a", "-pod-deletion-cost=true"),
			Elector{Election: "a", LockType: election.LockLeases, PodDeletionCost: true}, true, ""},
		{"pod-deletion-cost, other spellings grant nothing", podWithElector("", true, "-election=a", "-pod-deletion-cost", "-pod-deletion-cost=1"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"pod-deletion-cost, the last one wins", podWithElector("", true, "-election=a", "-pod-deletion-cost=true", "-pod-deletion-cost=false"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"invalid pod label", podWithElector("", true, "-election=a", "-pod-label=a b"), Elector{Election: "a", LockType: election.LockLeases, PodLabel: "a b"}, true, "is not a label key"},
		{"empty pod label", podWithElector("", true, "-election=a", "-pod-label="), Elector{Election: "a", LockType: election.LockLeases}, true, "is not a label key"},
		{"the injector's keys", podWithElector("", true, "-election=a", "-pod-label=elector.vapor.io/injected"),
			Elector{Election: "a", LockType: election.LockLeases, PodLabel: "elector.vapor.io/injected"}, true, "are the injector's"},
		{"leader-service, the last one wins", podWithElector("", true, "-election=a", "-leader-service=old", "--leader-service=web-leader"),
			Elector{Election: "a", LockType: election.LockLeases, LeaderService: "web-leader"}, true, ""},
		{"leader-service, a value in the next argument is not read", podWithElector("", true, "-election=a", "-leader-service", "web-leader"),
			Elector{Election: "a", LockType: election.LockLeases}, true, ""},
		{"leader-service, not a Service name", podWithElector("", true, "-election=a", "-leader-service=web.leader"),
			Elector{Election: "a", LockType: election.LockLeases, LeaderService: "web.leader"}, true, "is not a Service name"},
		{"leader-service, empty", podWithElector("", true, "-election=a", "-leader-service="),
			Elector{Election: "a", LockType: election.LockLeases}, true, "is not a Service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found, err := electorOf(&tt.pod)
			if found != tt.found {
				t.Errorf("found = %v, want %v", found, tt.found)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("elector (-want +got):\n%s", diff)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
