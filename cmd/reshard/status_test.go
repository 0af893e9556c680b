package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestStatusShowsRecentAndUnfinishedMigrations: `status` lists unfinished migrations and
// those finished within a day, oldest first; --all and an ID show an older finished one
// too; -o json carries the same migrations and the partition scheduler.
func TestStatusShowsRecentAndUnfinishedMigrations(t *testing.T) {
	_, ecli, global := catalogOnly(t)
	ctx := context.Background()
	now := time.Now()
	for _, m := range []catalog.Migration{
		{ID: "m_old", Kind: catalog.KindMove, Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2", Phase: catalog.PhaseDone, Created: now.Add(-72 * time.Hour), Updated: now.Add(-48 * time.Hour)},
		{ID: "m_recent", Kind: catalog.KindMove, Range: catalog.NewRange(10, 20), Source: "s1", Target: "s2", Phase: catalog.PhaseCancelled, Created: now.Add(-2 * time.Hour), Updated: now.Add(-time.Hour), LastError: "cancelled by the operator"},
	} {
		b, _ := json.Marshal(m)
		if _, err := ecli.Put(ctx, "/reshard/demo/"+catalog.MigrationKey(m.ID), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) cliResult { return runCLI(t, ctx, append(global, args...)...) }
	t.Run("recent only by default", func(t *testing.T) {
		res := run("status")
		if res.code != 0 || !strings.Contains(res.stdout, "m_recent") || strings.Contains(res.stdout, "m_old") || !strings.Contains(res.stdout, "partition scheduler: none running") {
			t.Errorf("status:\n%s%s", res.stdout, res.stderr)
		}
	})
	t.Run("--all and an ID show the old one", func(t *testing.T) {
		res := run("status", "--all")
		if i, j := strings.Index(res.stdout, "m_old"), strings.Index(res.stdout, "m_recent"); res.code != 0 || i < 0 || j < i {
			t.Errorf("status --all, oldest first:\n%s", res.stdout)
		}
		if res := run("status", "m_old"); res.code != 0 || !strings.Contains(res.stdout, "m_old") {
			t.Errorf("status m_old:\n%s%s", res.stdout, res.stderr)
		}
	})
	t.Run("-o json", func(t *testing.T) {
		res := run("status", "-o", "json")
		var out struct {
			Migrations []struct {
				ID    string `json:"id"`
				Phase string `json:"phase"`
			} `json:"migrations"`
			Scheduler map[string]any `json:"partition_scheduler"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out.Migrations) != 1 || out.Migrations[0].ID != "m_recent" || out.Scheduler == nil {
			t.Errorf("status -o json: %v\n%s", err, res.stdout)
		}
	})
}
