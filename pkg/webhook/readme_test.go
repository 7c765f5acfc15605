package webhook

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestREADMEAnnotations keeps the README's annotation reference equal to
// knownAnnotations.
func TestREADMEAnnotations(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- BEGIN annotations (checked by pkg/webhook's tests) -->\n")
	block, _, ok2 := strings.Cut(block, "<!-- END annotations -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no annotations block")
	}
	var want strings.Builder
	want.WriteString("| Annotation | Example | Meaning |\n|---|---|---|\n")
	for _, a := range knownAnnotations {
		fmt.Fprintf(&want, "| `%s` | `%s` | %s |\n", a.Key, a.Example, a.Help)
	}
	if block != want.String() {
		t.Errorf("README.md's annotations differ from knownAnnotations; paste this into it:\n%s", want.String())
	}
}
