package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestDocsAndDashboardNameServedMetrics: docs/metrics.md lists every metric served, and the
// Grafana dashboard asks only for served ones.
func TestDocsAndDashboardNameServedMetrics(t *testing.T) {
	m := New()
	r := rec("m1", catalog.PhaseCopying, 1)
	r.Timings = catalog.Timings{CutoverWindow: 0.01, Window: []catalog.WindowStep{{Step: "flip", Seconds: 0.001}}}
	m.Migration(r)
	m.CutOver(r)
	m.PartitionRun(catalog.PartitionRun{Shards: []catalog.PartitionShardRun{{Shard: "s1", Tables: []catalog.PartitionTableRun{{Table: "t"}}}}})
	served := map[string]bool{}
	for name := range scrape(t, m) {
		if strings.HasPrefix(name, "reshard_") {
			served[name] = true
		}
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range served {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/metrics.md does not list %s", name)
		}
	}
	dash, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`reshard_[a-z_]+`).FindAllString(string(dash), -1)
	if len(used) == 0 {
		t.Fatal("the dashboard uses no reshard metric")
	}
	for _, name := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !served[base] {
			t.Errorf("the dashboard asks for %s, which is not served", name)
		}
	}
}
