package mover

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
)

// TestMoveWaitsForPartitionMaintenance: while partition maintenance holds its lock on a
// shard (package partitions), a starting move marks neither the target (reshard.progress)
// nor the source (publication, slot) and copies nothing; it goes on once the lock is
// released. So maintenance never removes partitions under a move it could not see.
func TestMoveWaitsForPartitionMaintenance(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 4, 2, 20, 2)
	rng := catalog.NewRange(2, 4)
	seedNeighbours(t, ctx, src, dst, testTables, rng)
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
	m, err := New(Config{ID: "maint", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: testTables, Range: rng, Logger: testLogger(t)}, newMemJournal())
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

	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Start did not return within 2 minutes of the locks' release")
	}
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

func count(t *testing.T, ctx context.Context, db querier, sql string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
