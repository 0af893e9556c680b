package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// TestStatusShowsSlotWAL: `reshard status` shows, for an unfinished migration whose slot
// exists, the WAL the slot retains on the source (with wal_status and safe_wal_size), and
// flags a migration no driver is running (its lock is free), saying what to do; -o json
// carries the same. A finished migration's slot is not looked for.
func TestStatusShowsSlotWAL(t *testing.T) {
	env := partitionsCluster(t, "statustest")
	ctx := testContext(t, 2*time.Minute)
	st, err := env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src, err := pgx.Connect(ctx, st.Shards["s1"].DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	// The slot of an abandoned move, and WAL written since it was created.
	if _, err := src.Exec(ctx, `SELECT pg_create_logical_replication_slot('reshard_stuck', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Exec(ctx, `CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*catalog.Migration{
		{ID: "stuck", Kind: catalog.KindMove, Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2",
			Phase: catalog.PhaseCatchingUp, Slot: "reshard_stuck", Publication: "reshard_stuck"},
		{ID: "ended", Kind: catalog.KindMove, Range: catalog.NewRange(10, 20), Source: "s1", Target: "s2",
			Phase: catalog.PhaseDone, Slot: "reshard_ended"},
	} {
		if err := env.store.PutMigration(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	status := func(args ...string) string {
		t.Helper()
		res := env.runner(t, ctx)(args...)
		if res.code != 0 {
			t.Fatalf("status %v: exit %d: %s", args, res.code, res.stderr)
		}
		return res.stdout
	}

	out := status("status")
	for _, want := range []string{"slot reshard_stuck on s1 retains", "wal_status reserved", "no driver holds its lock", "reshard cancel stuck"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "reshard_ended") {
		t.Errorf("status looks for the slot of a finished migration:\n%s", out)
	}
	var rep struct {
		Migrations []struct {
			ID   string `json:"id"`
			Slot *struct {
				Name          string `json:"name"`
				Shard         string `json:"shard"`
				RetainedBytes int64  `json:"retained_bytes"`
				WALStatus     string `json:"wal_status"`
				SafeWALSize   *int64 `json:"safe_wal_size"`
			} `json:"slot"`
			Abandoned bool   `json:"abandoned"`
			Driver    string `json:"driver"`
		} `json:"migrations"`
	}
	js := status("-o", "json", "status")
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, js)
	}
	found := false
	for _, m := range rep.Migrations {
		switch m.ID {
		case "stuck":
			found = true
			if m.Slot == nil || m.Slot.Name != "reshard_stuck" || m.Slot.Shard != "s1" || m.Slot.RetainedBytes < 1<<20 ||
				m.Slot.WALStatus != "reserved" || !m.Abandoned {
				t.Errorf("stuck: %s", js)
			}
		case "ended":
			if m.Slot != nil || m.Abandoned {
				t.Errorf("ended: %s", js)
			}
		}
	}
	if !found {
		t.Fatalf("no report of the stuck migration: %s", js)
	}

	// With a driver holding its lock, it is not abandoned.
	lock, err := env.store.TryLockMigration(ctx, "stuck")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock(context.Background()) //nolint:errcheck
	out = status("status", "stuck")
	if !strings.Contains(out, "slot reshard_stuck on s1 retains") || strings.Contains(out, "no driver") {
		t.Errorf("status of a driven migration:\n%s", out)
	}
	t.Logf("status of a driven migration:\n%s", out)
}
