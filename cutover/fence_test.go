package cutover

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
)

func TestFenceGuard(t *testing.T) {
	ctx := context.Background()
	tables := []string{"tenants", "orders"}
	pg, db := guardedShard(t, schema, tables...)
	if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables); err != nil {
		t.Fatalf("second install must be a no-op: %v", err)
	}
	pg.Exec(ctx, `INSERT INTO tenants VALUES (5, 'a'), (15, 'b'), (25, 'c')`)
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), tables, 1); err != nil {
		t.Fatal(err)
	}
	app := connect(t, pg.DSNApp())
	tests := []struct {
		sql    string
		fenced bool
	}{
		{`INSERT INTO tenants VALUES (12, 'x')`, true},
		{`INSERT INTO tenants VALUES (20, 'x')`, false},
		{`INSERT INTO tenants VALUES (9, 'x')`, false},
		{`UPDATE tenants SET name = 'y' WHERE tenant_id = 15`, true},
		{`UPDATE tenants SET tenant_id = 16 WHERE tenant_id = 25`, true}, // moves a row into the range
		{`UPDATE tenants SET tenant_id = 26 WHERE tenant_id = 15`, true}, // moves a row out of it
		{`DELETE FROM tenants WHERE tenant_id = 15`, true},
		{`DELETE FROM tenants WHERE tenant_id = 5`, false},
		{`INSERT INTO orders (tenant_id, total) VALUES (11, 1)`, true},
	}
	for _, tt := range tests {
		_, err := app.Exec(ctx, tt.sql)
		if tt.fenced != IsFenceError(err) {
			t.Errorf("%s: err = %v, fenced want %v", tt.sql, err, tt.fenced)
		}
		if tt.fenced && err != nil && !strings.Contains(err.Error(), "fenced") {
			t.Errorf("%s: message %q does not say fenced", tt.sql, err)
		}
		if !tt.fenced && err != nil {
			t.Errorf("%s: unexpected error %v", tt.sql, err)
		}
	}
	// reshard's own sessions pass.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('reshard.bypass', 'on', true)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tenants WHERE tenant_id = 15`); err != nil {
		t.Fatalf("bypass: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if kept, err := RemoveGuard(ctx, db, tables, nil); err != nil || kept == "" {
		t.Fatalf("RemoveGuard with a fence left = %q, %v; want it kept", kept, err)
	}
	if err := DropFence(ctx, db, "m1", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, `INSERT INTO tenants VALUES (13, 'x')`); err != nil {
		t.Fatalf("after DropFence: %v", err)
	}
	inUse := func(context.Context) (string, error) { return "another migration uses the shard", nil }
	if kept, err := RemoveGuard(ctx, db, tables, inUse); err != nil || kept != "another migration uses the shard" {
		t.Fatalf("RemoveGuard while in use = %q, %v; want it kept, saying why", kept, err)
	}
	if kept, err := RemoveGuard(ctx, db, tables, nil); err != nil || kept != "" {
		t.Fatalf("RemoveGuard = %q, %v; want it removed", kept, err)
	}
	var left int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d fence triggers left after RemoveGuard (%v)", left, err)
	}
}

func TestClearTombstones(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, schema)
	if err := ClearTombstones(ctx, db, catalog.NewRange(0, 10)); err != nil {
		t.Fatalf("no fence table yet: %v", err)
	}
	if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), []string{"tenants"}); err != nil {
		t.Fatal(err)
	}
	if err := SetFence(ctx, db, "old", catalog.NewRange(0, 100), []string{"tenants"}, 1); err != nil {
		t.Fatal(err)
	}
	if err := MarkTombstone(ctx, db, "old", catalog.NewRange(0, 100), 1); err != nil {
		t.Fatal(err)
	}
	// An active (non-tombstone) fence of a running cutover is not touched.
	if err := SetFence(ctx, db, "live", catalog.NewRange(200, 300), []string{"tenants"}, 1); err != nil {
		t.Fatal(err)
	}
	if err := ClearTombstones(ctx, db, catalog.NewRange(20, 50)); err != nil {
		t.Fatal(err)
	}
	if err := ClearTombstones(ctx, db, catalog.NewRange(250, 260)); err != nil {
		t.Fatal(err)
	}
	app := connect(t, pg.DSNApp())
	for _, tt := range []struct {
		key    int
		fenced bool
	}{{10, true}, {20, false}, {49, false}, {50, true}, {99, true}, {100, false}, {255, true}} {
		_, err := app.Exec(ctx, `INSERT INTO tenants VALUES ($1, 'x')`, tt.key)
		if IsFenceError(err) != tt.fenced || (!tt.fenced && err != nil) {
			t.Errorf("write to %d: %v, fenced want %v", tt.key, err, tt.fenced)
		}
	}
	if err := DropFence(ctx, db, "old", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, `INSERT INTO tenants VALUES (60, 'x')`); err != nil {
		t.Errorf("after DropFence of the cut tombstone: %v", err)
	}
}

// TestFenceStopsReplicaRoleWriters: the guard fires for every session, whatever its
// session_replication_role (an ORIGIN-enabled trigger does not fire in replica mode, the
// mode of logical replication apply workers, pg_restore --disable-triggers and some
// tools), on plain tables and on every partition, present or created later; only
// reshard.bypass lets a session through.
func TestFenceStopsReplicaRoleWriters(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, eventsSchema)
	tables := []string{"tenants", "orders", "events"}
	for range 2 { // a second install keeps the trigger ALWAYS-enabled
		if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables); err != nil {
			t.Fatal(err)
		}
	}
	pg.Exec(ctx, `CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`)
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), tables, 1); err != nil {
		t.Fatal(err)
	}
	writes := []string{
		`INSERT INTO tenants VALUES (12, 'x')`,
		`INSERT INTO orders (tenant_id, total) VALUES (12, 1)`,
		`INSERT INTO events VALUES (12, '2024-06-01')`,
		`INSERT INTO events VALUES (12, '2025-06-01')`,
	}
	for _, role := range []string{"origin", "replica", "local"} {
		app := connect(t, pg.DSNApp())
		if _, err := app.Exec(ctx, "SET session_replication_role = "+role); err != nil {
			t.Fatal(err)
		}
		for _, sql := range writes {
			if _, err := app.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			_, err := app.Exec(ctx, sql)
			if _, rerr := app.Exec(ctx, "ROLLBACK"); rerr != nil {
				t.Fatal(rerr)
			}
			if !IsFenceError(err) {
				t.Errorf("session_replication_role=%s: %s: err = %v, want SQLSTATE %s", role, sql, err, FenceSQLState)
			}
		}
		if _, err := app.Exec(ctx, "SET reshard.bypass = on"); err != nil {
			t.Fatal(err)
		}
		for _, sql := range writes {
			tx, err := app.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				t.Errorf("session_replication_role=%s with %s=on: %s: %v", role, BypassSetting, sql, err)
			}
			_ = tx.Rollback(ctx)
		}
	}
}

// TestSetFenceFailsWithoutGuard: setting a fence also checks, in the same statement, that
// every table (and partition) has the guard trigger enabled ALWAYS; a fence that would not
// stop writes fails, naming the table.
func TestSetFenceFailsWithoutGuard(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, eventsSchema)
	tables := []string{"tenants", "orders", "events"}
	tests := []struct {
		name, breakSQL, table string
	}{
		{"intact", ``, ``},
		{"dropped", `DROP TRIGGER reshard_fence ON orders`, "orders"},
		{"disabled", `ALTER TABLE tenants DISABLE TRIGGER reshard_fence`, "tenants"},
		{"origin only", `ALTER TABLE orders ENABLE TRIGGER reshard_fence`, "orders"},
		{"one partition disabled", `ALTER TABLE events_2024 DISABLE TRIGGER reshard_fence`, "events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables); err != nil {
				t.Fatal(err)
			}
			if tt.breakSQL != "" {
				pg.Exec(ctx, tt.breakSQL)
			}
			err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), tables, 1)
			if tt.table == "" {
				if err != nil {
					t.Fatalf("SetFence with the guard in place: %v", err)
				}
			} else if !errors.Is(err, ErrGuardMissing) || !strings.Contains(err.Error(), tt.table) {
				t.Fatalf("SetFence = %v, want ErrGuardMissing naming %s", err, tt.table)
			}
			if err := DropFence(ctx, db, "m1", 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestGuardDDLDoesNotQueueWriters: while a long transaction holds a lock on a sharded
// table, installing or removing the guard waits for its lock at most lock_timeout per
// attempt, so a writer queued behind that wait goes through while the long transaction
// is still open; after its attempts, InstallGuard fails saying what to do, RemoveGuard
// leaves the trigger and says why. Once the transaction ends, both succeed.
func TestGuardDDLDoesNotQueueWriters(t *testing.T) {
	ctx := context.Background()
	pg := shards(t, schema)[0]
	tables := []string{"tenants", "orders"}
	tests := []struct {
		name, mode string
		installed  bool
		run        func(db *pgx.Conn) (kept string, err error)
	}{
		{"install", "ShareRowExclusiveLock", false, func(db *pgx.Conn) (string, error) {
			return "", InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables)
		}},
		{"remove", "AccessExclusiveLock", true, func(db *pgx.Conn) (string, error) {
			return RemoveGuard(ctx, db, tables, nil)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := connect(t, pg.DSNApp())
			if tt.installed {
				if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables); err != nil {
					t.Fatal(err)
				}
			}
			long := connect(t, pg.DSNApp())
			tx, err := long.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck
			if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES ($1, 'long')`, 1000+i); err != nil {
				t.Fatal(err)
			}
			type result struct {
				kept string
				err  error
			}
			done := make(chan result, 1)
			go func() {
				kept, err := tt.run(db)
				done <- result{kept, err}
			}()
			waitFor(t, time.Minute, "the guard's DDL to wait for its lock", func() bool {
				var waiting bool
				err := long.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted
					AND relation = 'tenants'::regclass AND mode = $1)`, tt.mode).Scan(&waiting)
				return err == nil && waiting
			})
			// A writer queued behind the DDL's lock request.
			w := connect(t, pg.DSNApp())
			if _, err := w.Exec(ctx, `SET statement_timeout = '30s'`); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Exec(ctx, `INSERT INTO tenants VALUES ($1, 'writer')`, 2000+i); err != nil {
				t.Fatalf("a writer queued behind the guard's lock wait, while the long transaction is open: %v", err)
			}
			r := <-done
			if tt.installed {
				if r.err != nil || !strings.Contains(r.kept, "lock") {
					t.Fatalf("RemoveGuard under a long transaction = %q, %v; want the guard kept, saying a lock was not granted", r.kept, r.err)
				}
				if missing, err := guardMissing(ctx, db, tables); err != nil || len(missing) > 0 {
					t.Fatalf("guard after a RemoveGuard that gave up: missing on %v (%v)", missing, err)
				}
			} else if !errors.Is(r.err, ErrLockNotGranted) || !strings.Contains(r.err.Error(), "tenants") {
				t.Fatalf("InstallGuard under a long transaction = %v, want ErrLockNotGranted naming tenants", r.err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if kept, err := tt.run(db); err != nil || kept != "" {
				t.Fatalf("%s once the long transaction ended = %q, %v", tt.name, kept, err)
			}
		})
	}
}

// TestDropFenceMatchesIDExactly: a migration's fence is its own row and the parts
// ClearTombstones cut it into ("<id>.<n>", "<id>.<n>.<m>"), never the fence of another
// migration whose id differs where a LIKE wildcard ('_') would match.
func TestDropFenceMatchesIDExactly(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, schema, "tenants")
	all := []string{"a_b", "a_b.1", "a_b.1.2", "axb", "axb.1", "a_b_c.1", "a_bb.1", "a1b.2", "xa_b.1"}
	tests := []struct {
		drop string
		left []string
	}{
		{"a_b", []string{"a1b.2", "a_b_c.1", "a_bb.1", "axb", "axb.1", "xa_b.1"}},
		{"axb", []string{"a1b.2", "a_b", "a_b.1", "a_b.1.2", "a_b_c.1", "a_bb.1", "xa_b.1"}},
		{"a_", []string{"a1b.2", "a_b", "a_b.1", "a_b.1.2", "a_b_c.1", "a_bb.1", "axb", "axb.1", "xa_b.1"}},
	}
	for _, tt := range tests {
		pg.Exec(ctx, `TRUNCATE reshard.fence`)
		for i, id := range all {
			if err := SetFence(ctx, db, id, catalog.NewRange(int64(i*10), int64(i*10+10)), []string{"tenants"}, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := DropFence(ctx, db, tt.drop, 1); err != nil {
			t.Fatalf("DropFence(%s): %v", tt.drop, err)
		}
		left, err := pgmeta.Strings(ctx, db, `SELECT migration FROM reshard.fence ORDER BY migration COLLATE "C"`)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(left, tt.left) {
			t.Errorf("DropFence(%s) left %v; want %v", tt.drop, left, tt.left)
		}
	}
}
