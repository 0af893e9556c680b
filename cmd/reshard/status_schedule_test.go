package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestPrintPartitionRun: what the text status says for runs that need attention.
func TestPrintPartitionRun(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 5, 0, 0, time.UTC)
	until := time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)
	base := func() *catalog.PartitionRun {
		return &catalog.PartitionRun{Time: now.Add(-5 * time.Minute), Seconds: 0.4, Holder: "h pid 1", Outcome: catalog.PartitionRunOK, MinRunway: 0,
			Shards: []catalog.PartitionShardRun{
				{Shard: "s1", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 3}}},
				{Shard: "s2", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 0, RunwayUntil: &until, Errors: 7}}},
			}}
	}
	errs := base()
	errs.Outcome = catalog.PartitionRunErrors
	for i := 0; i < 7; i++ {
		errs.Errors = append(errs.Errors, "s2: events: lock not granted")
	}
	idle := &catalog.PartitionRun{Time: now, Outcome: catalog.PartitionRunIdle, MinRunway: -1}
	cases := []struct {
		name string
		run  *catalog.PartitionRun
		want []string
	}{
		{"none", nil, []string{"last partition run: none recorded"}},
		{"no runway", base(), []string{"(5m0s ago) by h pid 1: ok in 0.4s", "runway: 0 premade partitions left on s2/events", "reshard partitions apply"}},
		{"errors", errs, []string{": errors in ", "error: s2: events: lock not granted", "... 2 more errors (reshard status -o json)"}},
		{"idle", idle, []string{": idle in ", "runway: no partitioned table was seen"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			printPartitionRun(&b, c.run, now)
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
