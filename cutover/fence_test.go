package cutover

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover/cutovertest"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
)

const schema = cutovertest.Schema

var connect = cutovertest.Connect

func TestFenceGuard(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db := connect(t, pg.DSNApp())
	tables := []string{"tenants", "orders"}
	if err := InstallGuard(ctx, db, "tenant_id", tables); err != nil {
		t.Fatal(err)
	}
	if err := InstallGuard(ctx, db, "tenant_id", tables); err != nil {
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

// TestWaitStragglers: a REPEATABLE READ transaction whose snapshot predates the fence
// does not see it, so the drain must wait for it (or kill it).
func TestWaitStragglers(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db := connect(t, pg.DSNApp())
	if err := InstallGuard(ctx, db, "tenant_id", []string{"tenants"}); err != nil {
		t.Fatal(err)
	}
	old := connect(t, pg.DSNApp())
	tx, err := old.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil { // takes the snapshot
		t.Fatal(err)
	}
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), []string{"tenants"}, 1); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	// The old snapshot does not see the fence: its write passes the trigger.
	if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES (11, 'late')`); err != nil {
		t.Fatalf("old snapshot write: %v", err)
	}
	if _, err := WaitStragglers(ctx, db, at, 100*time.Millisecond, false); !errors.Is(err, ErrStragglers) {
		t.Fatalf("WaitStragglers = %v, want ErrStragglers", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := WaitStragglers(ctx, db, at, 10*time.Second, false)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitStragglers after commit: %v", err)
	}
	lsn, err := FenceLSN(ctx, db, "m1")
	if err != nil || lsn == 0 {
		t.Fatalf("FenceLSN = %v, %v", lsn, err)
	}
	// Kill mode terminates an idle-in-transaction straggler.
	tx2, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	at2, _ := fenceTime(ctx, db)
	killed, err := WaitStragglers(ctx, db, at2, 50*time.Millisecond, true)
	if err != nil || len(killed) != 1 {
		t.Fatalf("kill: killed %v, err %v", killed, err)
	}
}

func TestVerifySequencesDelete(t *testing.T) {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	for _, p := range pgs {
		p.Exec(ctx, schema)
	}
	fill := `INSERT INTO orders (tenant_id, total, note) SELECT g % 30, g, jsonb_build_object('g', g) FROM generate_series(1, 3000) g`
	pgs[0].Exec(ctx, fill)
	r := catalog.NewRange(10, 20)
	// Copy the range by hand, in a different physical order.
	rows, err := src.Query(ctx, `SELECT tenant_id, id, total, note FROM orders WHERE tenant_id >= 10 AND tenant_id < 20 ORDER BY id DESC`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := dst.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"tenant_id", "id", "total", "note"}, pgx.CopyFromRows(mustRows(t, rows)))
	if err != nil || n != 1000 {
		t.Fatalf("copy: %d %v", n, err)
	}
	tables := []string{"tenants", "orders"}
	v, err := Verify(ctx, src, dst, "tenant_id", tables, r)
	if err != nil || v.Rows != 1000 {
		t.Fatalf("Verify equal = %+v, %v", v, err)
	}
	for _, bad := range []string{
		`UPDATE orders SET total = total + 1 WHERE id = (SELECT min(id) FROM orders WHERE tenant_id = 12)`,
		`INSERT INTO orders SELECT tenant_id, id + 100000, total, note FROM orders WHERE tenant_id = 12 LIMIT 1`,
	} {
		pgs[1].Exec(ctx, `BEGIN; `+bad+`; COMMIT`)
		if _, err := Verify(ctx, src, dst, "tenant_id", tables, r); !errors.Is(err, ErrMismatch) {
			t.Errorf("after %q: Verify = %v, want ErrMismatch", bad, err)
		}
	}
	// Sequences: the target's must reach the source's.
	seqs, err := SyncSequences(ctx, src, dst, tables)
	if err != nil || len(seqs) != 1 || seqs[0].Value < 3000 {
		t.Fatalf("SyncSequences = %+v, %v", seqs, err)
	}
	var next int64
	if err := dst.QueryRow(ctx, `SELECT nextval('orders_id_seq')`).Scan(&next); err != nil || next <= 3000 {
		t.Fatalf("target nextval = %d, %v", next, err)
	}
	// Delete in small batches through the fence.
	if err := InstallGuard(ctx, src, "tenant_id", tables); err != nil {
		t.Fatal(err)
	}
	if err := SetFence(ctx, src, "m1", r, tables, 1); err != nil {
		t.Fatal(err)
	}
	before, err := demo.Fingerprint(ctx, src, tables)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DeleteRange(ctx, src, "tenant_id", tables, r, DeleteOptions{BatchRows: 128})
	if err != nil || got["orders"] != 1000 {
		t.Fatalf("DeleteRange = %v, %v", got, err)
	}
	var left, others int
	_ = src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE tenant_id >= 10 AND tenant_id < 20), count(*) FILTER (WHERE tenant_id < 10 OR tenant_id >= 20) FROM orders`).Scan(&left, &others)
	if left != 0 || others != 2000 {
		t.Fatalf("after delete: %d in range, %d others; want 0, 2000", left, others)
	}
	// Every other tenant's rows are exactly as they were.
	after, err := demo.Fingerprint(ctx, src, tables)
	if err != nil {
		t.Fatal(err)
	}
	outside := func(tenant int64) bool { return !r.Contains(tenant) }
	if err := before.Only(outside).Diff("the source", after); err != nil {
		t.Error(err)
	}
}

func mustRows(t *testing.T, rows pgx.Rows) [][]any {
	t.Helper()
	var out [][]any
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestClearTombstones(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db := connect(t, pg.DSNApp())
	if err := ClearTombstones(ctx, db, catalog.NewRange(0, 10)); err != nil {
		t.Fatalf("no fence table yet: %v", err)
	}
	if err := InstallGuard(ctx, db, "tenant_id", []string{"tenants"}); err != nil {
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
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema+`
		CREATE TABLE events (tenant_id bigint, at date, PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');`)
	db := connect(t, pg.DSNApp())
	tables := []string{"tenants", "orders", "events"}
	for range 2 { // a second install keeps the trigger ALWAYS-enabled
		if err := InstallGuard(ctx, db, "tenant_id", tables); err != nil {
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
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema+`
		CREATE TABLE events (tenant_id bigint, at date, PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');`)
	db := connect(t, pg.DSNApp())
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
			if err := InstallGuard(ctx, db, "tenant_id", tables); err != nil {
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
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	tables := []string{"tenants", "orders"}
	tests := []struct {
		name, mode string
		installed  bool
		run        func(db *pgx.Conn) (kept string, err error)
	}{
		{"install", "ShareRowExclusiveLock", false, func(db *pgx.Conn) (string, error) {
			return "", InstallGuard(ctx, db, "tenant_id", tables)
		}},
		{"remove", "AccessExclusiveLock", true, func(db *pgx.Conn) (string, error) {
			return RemoveGuard(ctx, db, tables, nil)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := connect(t, pg.DSNApp())
			if tt.installed {
				if err := InstallGuard(ctx, db, "tenant_id", tables); err != nil {
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
