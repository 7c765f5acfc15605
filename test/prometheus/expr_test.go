package prometheus

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// promql parses as Prometheus does.
var promql = parser.NewParser(parser.Options{})

// grafanaVar is a Grafana variable in a panel's query: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// grafanaIntervals are Grafana's built-in variables that stand for a range.
var grafanaIntervals = []string{"__rate_interval", "__interval", "__range"}

// expandPanel replaces a panel query's Grafana variables as Grafana would:
// intervals by a range, the dashboard's own variables by a value (they
// appear only inside label matchers). An unknown variable fails.
func expandPanel(t *testing.T, expr string, vars []string) string {
	t.Helper()
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVar.FindStringSubmatch(v)[1]
		switch {
		case slices.Contains(grafanaIntervals, name):
			return "5m"
		case slices.Contains(vars, name):
			return "value"
		}
		t.Errorf("the dashboard query %q uses $%s, which is neither Grafana's nor a variable of the dashboard %v", expr, name, vars)
		return v
	})
}

// dashboardVars are the names of the dashboard's template variables.
func dashboardVars(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(configDir, "prometheus", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range dash.Templating.List {
		names = append(names, v.Name)
	}
	return names
}

// query is one PromQL expression of the component, parsed.
type query struct {
	where string // the alert or the panel
	expr  parser.Expr
}

// queries parses every rule's and every panel's expression, failing the
// test on any that Prometheus would not parse.
func queries(t *testing.T) []query {
	t.Helper()
	objs := render(t, true)
	var out []query
	for _, r := range rules(t, objs) {
		e, err := promql.ParseExpr(r.Expr)
		if err != nil {
			t.Errorf("alert %s: %v\n%s", r.Alert, err, r.Expr)
			continue
		}
		out = append(out, query{"alert " + r.Alert, e})
	}
	vars := dashboardVars(t)
	for _, p := range dashboardExprs(t, objs) {
		e, err := promql.ParseExpr(expandPanel(t, p.expr, vars))
		if err != nil {
			t.Errorf("panel %q: %v\n%s", p.panel, err, p.expr)
			continue
		}
		out = append(out, query{"panel " + p.panel, e})
	}
	return out
}

// TestExpressionsParse: every alert's and every panel's expression is
// PromQL, by Prometheus's own parser.
func TestExpressionsParse(t *testing.T) {
	if qs := queries(t); len(qs) < 2 {
		t.Errorf("parsed %d expressions", len(qs))
	}
}

// TestAlertsAreActionable: every alert has a severity, a summary and a
// description; those of an election's alert name its election and
// namespace; and no annotation names a label that the alert's expression
// cannot carry, which would render empty.
func TestAlertsAreActionable(t *testing.T) {
	objs := render(t, true)
	ref := regexp.MustCompile(`\$labels\.(\w+)`)
	for _, r := range rules(t, objs) {
		if r.Alert == "" {
			t.Errorf("a rule records %q: the tests of this component check alerts only; check recording rules too before adding one", r.Record)
			continue
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		if r.For != "" {
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
		}
		summary, description := r.Annotations["summary"], r.Annotations["description"]
		if summary == "" || len(description) < 80 {
			t.Errorf("alert %s: summary %q, description %q: want a summary and a description that says what to do", r.Alert, summary, description)
		}
		e, err := promql.ParseExpr(r.Expr)
		if err != nil {
			continue // TestExpressionsParse reports it
		}
		out, closed := outputLabels(e)
		if closed[""] {
			t.Errorf("alert %s: its expression matches one-to-many or many-to-many, and this test cannot tell which labels it keeps", r.Alert)
			continue
		}
		if out["election"] {
			for name, text := range map[string]string{"summary": summary, "description": description} {
				if !strings.Contains(text, "{{ $labels.election }}") || !strings.Contains(text, "{{ $labels.namespace }}") {
					t.Errorf("alert %s: the %s does not name the election and its namespace ({{ $labels.election }}, {{ $labels.namespace }}): %q", r.Alert, name, text)
				}
			}
		}
		for name, text := range r.Annotations {
			for _, m := range ref.FindAllStringSubmatch(text, -1) {
				if len(closed) > 0 && !out[m[1]] {
					t.Errorf("alert %s: the %s names $labels.%s, which its expression does not keep (it keeps %v)", r.Alert, name, m[1], slices.Sorted(maps.Keys(out)))
				}
			}
		}
	}
}

// outputLabels returns the labels the result of e may carry. closed is
// empty when e keeps the labels of its series, which may be any: then out
// holds the labels it is known to add (group_left's). Otherwise closed is
// non-empty and out is the whole set.
func outputLabels(e parser.Expr) (out, closed map[string]bool) {
	set := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	yes := set("closed")
	switch n := e.(type) {
	case *parser.ParenExpr:
		return outputLabels(n.Expr)
	case *parser.AggregateExpr:
		if n.Without {
			out, closed := outputLabels(n.Expr)
			for _, l := range n.Grouping {
				delete(out, l)
			}
			return out, closed
		}
		return set(n.Grouping...), yes
	case *parser.Call:
		switch n.Func.Name {
		case "histogram_quantile":
			out, closed := outputLabels(n.Args[1])
			delete(out, "le")
			return out, closed
		case "absent":
			var names []string
			if vs, ok := n.Args[0].(*parser.VectorSelector); ok {
				for _, m := range vs.LabelMatchers {
					if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
						names = append(names, m.Name)
					}
				}
			}
			return set(names...), yes
		}
		for _, a := range n.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return outputLabels(a)
			}
		}
		return set(), yes
	case *parser.BinaryExpr:
		lhs, lclosed := outputLabels(n.LHS)
		if n.LHS.Type() == parser.ValueTypeScalar {
			return outputLabels(n.RHS)
		}
		m := n.VectorMatching
		if n.RHS.Type() == parser.ValueTypeScalar || m == nil {
			return lhs, lclosed
		}
		switch {
		case m.Card == parser.CardManyToOne:
			for _, l := range m.Include {
				lhs[l] = true
			}
			return lhs, lclosed
		case n.Op == parser.LAND || n.Op == parser.LUNLESS:
			return lhs, lclosed
		case m.Card == parser.CardOneToOne && m.On:
			if len(lclosed) == 0 {
				return set(m.MatchingLabels...), yes
			}
			out := set()
			for _, l := range m.MatchingLabels {
				if lhs[l] {
					out[l] = true
				}
			}
			return out, yes
		case m.Card == parser.CardOneToOne:
			for _, l := range m.MatchingLabels {
				delete(lhs, l)
			}
			return lhs, lclosed
		}
		return set(), set("") // many-to-many or one-to-many: not judged here
	case *parser.NumberLiteral, *parser.StringLiteral:
		return set(), yes
	}
	return set(), set() // selectors: any label
}
