package check

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestEveryAlertHasAUnitTest: deploy/prometheus/flowedge.rules.test.yaml
// (run by `promtool test rules`) has a test for every alert, and each test
// expects its alert to fire at least once.
func TestEveryAlertHasAUnitTest(t *testing.T) {
	b, err := os.ReadFile(deployPath(t, "prometheus", "flowedge.rules.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name          string `json:"name"`
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	if len(tf.RuleFiles) != 1 || !strings.HasSuffix(tf.RuleFiles[0], "helm/flowedge/files/prometheus/flowedge.rules.yaml") {
		t.Errorf("rule_files %v: want the chart's rule file", tf.RuleFiles)
	}
	fires := map[string]bool{}
	tested := map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !tested[r.Alert] {
				t.Errorf("alert %s has no promtool unit test", r.Alert)
			} else if !fires[r.Alert] {
				t.Errorf("alert %s: no unit test expects it to fire", r.Alert)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts in the rule file")
	}
}

// TestAlertsAreActionable: severity, summary, description and a runbook
// that exists in docs/kubernetes.md.
func TestAlertsAreActionable(t *testing.T) {
	doc, err := os.ReadFile(repoRoot(t) + "/docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+\s+(.+)$`).FindAllStringSubmatch(string(doc), -1) {
		anchors[slug(m[1])] = true
	}
	seen := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: summary and description are required", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			rb := r.Annotations["runbook_url"]
			_, anchor, ok := strings.Cut(rb, "docs/kubernetes.md#")
			if !ok || !anchors[anchor] {
				t.Errorf("alert %s: runbook_url %q does not point at a heading of docs/kubernetes.md", r.Alert, rb)
			}
		}
	}
}

// slug is GitHub's heading anchor: lower case, punctuation dropped, spaces
// to dashes.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}
