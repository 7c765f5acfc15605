package election

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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

// FuzzRawObject: any bytes decode into an error or an object that encodes
// again and decodes to the same object, its fields kept as JSON equal to
// those it was sent; never a panic.
//
//	go test -run '^$' -fuzz FuzzRawObject -fuzztime 2m -fuzzminimizetime 5s ./pkg/election/ (or make fuzz)
func FuzzRawObject(f *testing.F) {
	for _, seed := range []string{
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","annotations":{"a":"b"}},"data":{"k":"v"}}`,
		`{"metadata":{"name":"x"},"subsets":[{"addresses":[{"ip":"10.0.0.7"}]}],"n":1e400}`,
		`{"apiVersion":1}`, `{"metadata":null}`, `null`, `{"a":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var first configMap
		if err := json.Unmarshal(raw, &first); err != nil {
			return
		}
		out, err := json.Marshal(&first)
		if err != nil {
			t.Fatalf("decoded %q, cannot encode it again: %v", raw, err)
		}
		var second configMap
		if err := json.Unmarshal(out, &second); err != nil {
			t.Fatalf("encoded %q, cannot decode it again: %v", out, err)
		}
		// An empty map and none are one to the API server (omitempty).
		if diff := cmp.Diff(first.ObjectMeta, second.ObjectMeta, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("metadata changed through an encoding (-first +second):\n%s", diff)
		}
		if len(first.fields) != len(second.fields) {
			t.Fatalf("fields %v became %v", first.fields, second.fields)
		}
		for name, v := range first.fields {
			var a, b any
			_ = json.Unmarshal(v, &a)
			_ = json.Unmarshal(second.fields[name], &b)
			if diff := cmp.Diff(a, b); diff != "" {
				t.Errorf("field %s changed through an encoding (-first +second):\n%s", name, diff)
			}
		}
	})
}
