package controlplane

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParseRequests adds the series of one resource and verb over their
// other labels, keeps subresources apart, and skips every other metric.
func TestParseRequests(t *testing.T) {
	text := `# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="GET",version="v1"} 7
apiserver_request_total{code="404",component="apiserver",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 2
apiserver_request_total{code="201",component="apiserver",group="",resource="serviceaccounts",scope="resource",subresource="token",verb="POST",version="v1"} 1
apiserver_request_duration_seconds_count{resource="leases",verb="GET"} 99
`
	got, err := parseRequests([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[Request]float64{
		{"leases", "GET"}:                 10,
		{"leases", "PUT"}:                 2,
		{"serviceaccounts/token", "POST"}: 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseRequests (-want +got):\n%s", diff)
	}
	if _, err := parseRequests([]byte(`apiserver_request_total{resource="leases",verb="GET"} x`)); err == nil {
		t.Errorf("parseRequests accepted a count that is not a number")
	}
}
