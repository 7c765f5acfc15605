package election

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRawObjectKeepsWhatItDoesNotKnow decodes objects with fields the
// elector has no type for and encodes them again: only the metadata it
// changed may differ.
func TestRawObjectKeepsWhatItDoesNotKnow(t *testing.T) {
	for name, in := range map[string]string{
		"configmap": `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"ns","resourceVersion":"7","labels":{"a":"b"},"managedFields":[{"manager":"kubectl","operation":"Update"}]},"data":{"k":"v\u00e9","n":"12345678901234567890"},"binaryData":{"b":"AAEC/w=="},"immutable":false}`,
		"endpoints": `{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"x"},"subsets":[{"addresses":[{"ip":"10.0.0.7"}],"ports":[{"port":5432,"protocol":"TCP"}]}]}`,
		"no type":   `{"metadata":{"name":"x"},"futureField":{"nested":[1,2.5,true,null]}}`,
	} {
		t.Run(name, func(t *testing.T) {
			var cm configMap
			if err := json.Unmarshal([]byte(in), &cm); err != nil {
				t.Fatal(err)
			}
			c := cm.DeepCopyObject().(*configMap)
			c.SetAnnotations(map[string]string{LeaderAnnotation: "{}"})
			if labels := c.GetLabels(); labels != nil {
				labels["a"] = "changed"
			}
			out, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var want, got map[string]any
			if err := json.Unmarshal([]byte(in), &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			meta := want["metadata"].(map[string]any)
			meta["annotations"] = map[string]any{LeaderAnnotation: "{}"}
			if labels, ok := meta["labels"].(map[string]any); ok {
				labels["a"] = "changed"
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("encoded again (-want +got):\n%s", diff)
			}
			// The copy was changed, never the original.
			if cm.GetAnnotations() != nil || (cm.GetLabels() != nil && cm.GetLabels()["a"] != "b") {
				t.Errorf("changing the copy changed the original: %v %v", cm.GetAnnotations(), cm.GetLabels())
			}
		})
	}
}

func TestRawObjectRefusesWhatIsNotAnObject(t *testing.T) {
	for _, in := range []string{`[]`, `"x"`, `{"metadata":[]}`, `{"kind":1}`, `{`} {
		var cm configMap
		if err := json.Unmarshal([]byte(in), &cm); err == nil {
			t.Errorf("%s decoded without an error", in)
		}
	}
}
