package cutover

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover/cutovertest"
	"github.com/reshard/reshard/internal/testenv"
)

const schema = cutovertest.Schema

var connect = cutovertest.Connect

// shards starts one shard per statement and runs each its own (its schema, its settings).
func shards(t *testing.T, sqls ...string) []*testenv.PG {
	t.Helper()
	pgs := testenv.Postgres(t, len(sqls))
	for i, p := range pgs {
		p.Exec(context.Background(), sqls[i])
	}
	return pgs
}

// guardedShard starts one shard, runs sql on it (its schema), connects to it and, unless
// tables is empty, installs the guard on tables.
func guardedShard(t *testing.T, sql string, tables ...string) (*testenv.PG, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	pg := shards(t, sql)[0]
	db := connect(t, pg.DSNApp())
	if len(tables) > 0 {
		if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), tables); err != nil {
			t.Fatal(err)
		}
	}
	return pg, db
}

// eventsSchema is schema with a date-partitioned table (its rows reach the guard through
// the partition).
const eventsSchema = schema + `
		CREATE TABLE events (tenant_id bigint, at date, PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
		CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');`

// twoShards starts a source and a target shard, runs sql on both and connects to each.
func twoShards(t *testing.T, sql string) (pgs []*testenv.PG, src, dst *pgx.Conn) {
	t.Helper()
	pgs = shards(t, sql, sql)
	return pgs, connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
}

// snapshotTx begins a REPEATABLE READ transaction on c and takes its snapshot at once, as
// a transaction that started before the fence has.
func snapshotTx(t *testing.T, c *pgx.Conn) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitFor polls cond every 50 ms for at most limit (generous: the machine is shared).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copiedReplicator stands for a mover whose copy is already complete and whose source is
// fenced: WaitApplied has nothing left to wait for. It moves no data; the tests that
// claim data moved use the real mover (integration package).
type copiedReplicator struct{ stopped int }

func (r *copiedReplicator) WaitApplied(context.Context, pglogrepl.LSN) error { return nil }
func (r *copiedReplicator) Stop(context.Context) error                       { r.stopped++; return nil }

type fixture struct {
	env   Env
	store *catalog.Store
	rng   catalog.KeyRange
	fx    cutovertest.Fixture
}

// setup is cutovertest's fixture with the guard installed on the source, as the
// migration's start leaves it.
func setup(t *testing.T) fixture {
	t.Helper()
	fx := cutovertest.New(t)
	if err := InstallGuard(context.Background(), fx.Source, catalog.RangeOn(fx.Key), fx.Tables); err != nil {
		t.Fatal(err)
	}
	env := Env{Catalog: fx.Store, Source: fx.Source, Target: fx.Target, Key: fx.Key, Tables: fx.Tables}
	return fixture{env: env, store: fx.Store, rng: fx.Range, fx: fx}
}

func newMigration(t *testing.T, f fixture) *catalog.Migration { return f.fx.Migration(t) }
