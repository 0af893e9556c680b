package mover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/internal/testenv"
)

// truncSchema has a parent and a child with a foreign key, a table partitioned by date
// and a table that is not part of the move.
const truncSchema = `
CREATE TABLE accounts (tenant_id bigint NOT NULL, id bigint NOT NULL, name text, PRIMARY KEY (tenant_id, id));
CREATE TABLE ledger (tenant_id bigint NOT NULL, id bigint NOT NULL, account_id bigint NOT NULL, amount numeric,
	PRIMARY KEY (tenant_id, id), FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id));
CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, at date NOT NULL, payload text,
	PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE unrelated (tenant_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
`

const truncDrop = `DROP TABLE IF EXISTS ledger, accounts, events, unrelated CASCADE`

const truncSeed = `
INSERT INTO accounts SELECT t, a, 'a' || a FROM generate_series(1, 9) t, generate_series(1, 5) a;
INSERT INTO ledger SELECT t, l, 1 + l % 5, l FROM generate_series(1, 9) t, generate_series(1, 100) l;
INSERT INTO events SELECT t, i, date '2024-01-01' + (i % 59), 'e' || i FROM generate_series(1, 9) t, generate_series(1, 100) i;
INSERT INTO unrelated SELECT t, i FROM generate_series(1, 9) t, generate_series(1, 10) i;
`

var truncTables = []string{"accounts", "ledger", "events"}

// TestTruncateOnSourceStopsTheMove: a TRUNCATE of a table of the move on the source,
// during the catch-up or during the copy (after the slot's snapshot), removes rows without
// row changes; the catch-up stops with ErrTruncated, naming the table and saying to cancel
// and start again, and the journal's last_error says so. That holds for a plain table, a
// TRUNCATE ... CASCADE, a partitioned table and a single partition (which pgoutput does not
// publish under publish_via_partition_root). A TRUNCATE of a table outside the move changes
// nothing. After Cancel nothing of reshard is left on the source, and the target holds its
// other tenants' rows exactly as before.
func TestTruncateOnSourceStopsTheMove(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, truncSchema)
	rng := catalog.NewRange(3, 6)
	cases := []struct {
		name       string
		sql        string
		duringCopy bool
		want       []string // names in the error; none: the move goes on
	}{
		{"table", "TRUNCATE ledger", false, []string{"public.ledger"}},
		{"cascade", "TRUNCATE accounts CASCADE", false, []string{"public.accounts", "public.ledger"}},
		{"partitioned table", "TRUNCATE events", false, []string{"public.events"}},
		{"partition", "TRUNCATE events_p1", false, []string{"public.events_p1", "partition of public.events"}},
		{"table during the copy", "TRUNCATE ledger", true, []string{"public.ledger"}},
		{"partition during the copy", "TRUNCATE events_p2", true, []string{"public.events_p2"}},
		{"table outside the move", "TRUNCATE unrelated", false, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, db := range []execer{src, dst} {
				mustExec(t, ctx, db, truncDrop)
				mustExec(t, ctx, db, truncSchema)
			}
			mustExec(t, ctx, src, truncSeed)
			seedNeighbours(t, ctx, src, dst, append(truncTables, "unrelated"), rng)
			id := fmt.Sprintf("trunc%d", i)
			j := newMemJournal()
			var once sync.Once
			if tc.duringCopy {
				// Right after the slot's snapshot is taken, before any row is copied.
				j.onSave = func(r *catalog.Migration) {
					if r.Phase == catalog.PhaseCopying && r.ConsistentLSN != "" {
						once.Do(func() { mustExec(t, ctx, src, tc.sql) })
					}
				}
			}
			m := startMover(t, ctx, moveConfig(t, id, srcPG, dstPG, truncTables, rng), j)
			defer m.Stop(ctx)
			if !tc.duringCopy {
				mustExec(t, ctx, src, tc.sql)
			}
			mustExec(t, ctx, src, `INSERT INTO accounts VALUES (4, 100, 'after')`)
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			err := m.WaitApplied(wctx, currentLSN(t, ctx, src))
			cancel()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("a TRUNCATE outside the move stopped it: %v", err)
				}
				assertSame(t, ctx, src, dst, truncTables, rng)
				return
			}
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("catch-up after %q: %v, want ErrTruncated", tc.sql, err)
			}
			for _, w := range append(tc.want, "reshard cancel "+id, "start the move again") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			t.Logf("%s: %v", tc.sql, err)
			if rec := j.get(t, id); !strings.Contains(rec.LastError, tc.want[0]) || !strings.Contains(rec.LastError, "TRUNCATE") {
				t.Errorf("journal last_error = %q", rec.LastError)
			}
			if err := m.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			if l := leftovers(t, ctx, src); len(l) > 0 {
				t.Errorf("left on the source after Cancel: %v", l)
			}
			if n := truncateTriggers(t, ctx, src); n != 0 {
				t.Errorf("%d reshard_truncate triggers left on the source after Cancel", n)
			}
			for _, tbl := range append(truncTables, "unrelated") {
				if n := len(rangeRows(t, ctx, dst, tbl, rng)); n != 0 {
					t.Errorf("target %s: %d rows of the range after Cancel", tbl, n)
				}
			}
			assertOthers(t, ctx, dst, append(truncTables, "unrelated"), rng)
		})
	}
}

// truncateTriggers counts reshard's TRUNCATE triggers on a database.
func truncateTriggers(t testing.TB, ctx context.Context, db pgmeta.Querier) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_truncate'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMoveWaitsForPartitionMaintenance: while partition maintenance holds its lock on a
// shard (package partitions), a starting move marks neither the target (reshard.progress)
// nor the source (publication, slot) and copies nothing; it goes on once the lock is
// released. So maintenance never removes partitions under a move it could not see.
func TestMoveWaitsForPartitionMaintenance(t *testing.T) {
	ctx := context.Background()
	rng := catalog.NewRange(2, 4)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 4, 2, 20, 2)
	hold := func(db string) *pgx.Conn {
		c, err := pgx.Connect(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		mustExec(t, ctx, c, "SELECT pg_advisory_lock(hashtext('reshard.partitions'))")
		return c
	}
	srcLock, dstLock := hold(srcPG.DSNApp()), hold(dstPG.DSNApp())
	m, err := New(moveConfig(t, "maint", srcPG, dstPG, testTables, rng), newMemJournal())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- m.Start(ctx) }()
	defer m.Stop(ctx)

	waitWaiter(t, ctx, dst, started)
	if n := count(t, ctx, dst, `SELECT count(*) FROM reshard.progress`); n != 0 {
		t.Errorf("the target got a reshard.progress row while maintenance held it")
	}
	mustExec(t, ctx, dstLock, "SELECT pg_advisory_unlock(hashtext('reshard.partitions'))")

	waitWaiter(t, ctx, src, started)
	if n := count(t, ctx, dst, `SELECT count(*) FROM reshard.progress WHERE migration = 'maint'`); n != 1 {
		t.Errorf("the target has %d reshard.progress rows for the move before its copy, want 1", n)
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Errorf("the source got %v while maintenance held it", l)
	}
	if n := len(rangeRows(t, ctx, dst, "ledger", rng)); n != 0 {
		t.Errorf("%d rows copied while maintenance held the source", n)
	}
	mustExec(t, ctx, srcLock, "SELECT pg_advisory_unlock(hashtext('reshard.partitions'))")

	testenv.WaitErr(t, started, 2*time.Minute, "Start did not return within 2 minutes of the locks' release")
	assertSame(t, ctx, src, dst, testTables, rng)
	if err := m.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitWaiter waits until a session waits for an advisory lock on db.
func waitWaiter(t *testing.T, ctx context.Context, db *pgxpool.Pool, started <-chan error) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-started:
			t.Fatalf("Start returned (%v) while partition maintenance held its lock", err)
		default:
		}
		if count(t, ctx, db, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the move never waited for partition maintenance")
		}
	}
}
