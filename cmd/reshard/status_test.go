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
	env := catalogOnly(t)
	ctx := context.Background()
	now := time.Now()
	for _, m := range []catalog.Migration{
		{ID: "m_old", Kind: catalog.KindMove, Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2", Phase: catalog.PhaseDone, Created: now.Add(-72 * time.Hour), Updated: now.Add(-48 * time.Hour)},
		{ID: "m_recent", Kind: catalog.KindMove, Range: catalog.NewRange(10, 20), Source: "s1", Target: "s2", Phase: catalog.PhaseCancelled, Created: now.Add(-2 * time.Hour), Updated: now.Add(-time.Hour), LastError: "cancelled by the operator"},
	} {
		b, _ := json.Marshal(m)
		if _, err := env.cli.Put(ctx, "/reshard/demo/"+catalog.MigrationKey(m.ID), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	run := env.runner(t, ctx)
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

// TestStatusShowsWhichDriverHoldsEachMigration: `status` names, for each unfinished
// migration, the driver holding its lock (host, pid and start, as the lock records them),
// "none" for one nobody holds, and "-" for a finished one; -o json carries the driver.
func TestStatusShowsWhichDriverHoldsEachMigration(t *testing.T) {
	env := catalogOnly(t)
	ctx := context.Background()
	for _, m := range []*catalog.Migration{
		{ID: "m_held", Kind: catalog.KindMove, Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2", Phase: catalog.PhaseCopying},
		{ID: "m_free", Kind: catalog.KindMove, Range: catalog.NewRange(10, 20), Source: "s1", Target: "s2", Phase: catalog.PhaseCopying},
		{ID: "m_done", Kind: catalog.KindMove, Range: catalog.NewRange(20, 30), Source: "s1", Target: "s2", Phase: catalog.PhaseDone},
	} {
		if err := env.store.PutMigration(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	const holder = "host-a pid 42 started 2026-12-02T00:00:00Z"
	driver, err := catalog.NewStore(env.cli, "demo", catalog.WithHolder(holder))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := driver.TryLockMigration(ctx, "m_held")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(ctx)

	res := runCLI(t, ctx, append(env.global, "status")...)
	rows := map[string]string{}
	for _, line := range strings.Split(res.stdout, "\n") {
		if id, _, ok := strings.Cut(line, " "); ok {
			rows[id] = line
		}
	}
	if res.code != 0 || !strings.Contains(rows["ID"], "DRIVER") || !strings.HasSuffix(rows["m_held"], holder) ||
		!strings.HasSuffix(rows["m_free"], " none") || !strings.HasSuffix(rows["m_done"], " -") {
		t.Errorf("status: want a DRIVER column naming %q for m_held, none for m_free, - for m_done:\n%s%s", holder, res.stdout, res.stderr)
	}

	res = runCLI(t, ctx, append(env.global, "status", "-o", "json")...)
	var out struct {
		Migrations []struct {
			ID     string `json:"id"`
			Driver string `json:"driver"`
		} `json:"migrations"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, res.stdout)
	}
	drivers := map[string]string{}
	for _, m := range out.Migrations {
		drivers[m.ID] = m.Driver
	}
	if drivers["m_held"] != holder || drivers["m_free"] != "" || drivers["m_done"] != "" {
		t.Errorf("status -o json drivers: %v; want m_held held by %q, no driver for the others", drivers, holder)
	}
}
