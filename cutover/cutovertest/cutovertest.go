package cutovertest

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// Schema is the two tables of the fixture's shards.
const Schema = `
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text);
CREATE TABLE orders (tenant_id bigint, id bigserial, total numeric, note jsonb, PRIMARY KEY (tenant_id, id));
`

// Fixture is a catalog of shards s1 and s2: ranges [, 10) and [10, 20) on s1, [20, ) on
// s2. Each shard has Schema; s1 holds tenants 0-29 with 30 orders each, s2 their copy of
// Range.
type Fixture struct {
	Store          *catalog.Store
	Source, Target *pgx.Conn // the app database of s1 and s2, closed at cleanup
	Key            string
	Tables         []string
	Range          catalog.KeyRange // [10, 20): on s1, copied to s2
}

// New starts the fixture's servers, fills them and writes the catalog.
func New(t *testing.T) Fixture {
	t.Helper()
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	_, cli := testenv.Etcd(t)
	store, err := catalog.NewStore(cli, "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pgs {
		p.Exec(ctx, Schema)
	}
	tables := []string{"tenants", "orders"}
	cfg := catalog.Config{Cluster: "t", Key: "tenant_id", Tables: tables}
	shards := []catalog.Shard{{Name: "s1", DSN: pgs[0].DSNApp()}, {Name: "s2", DSN: pgs[1].DSNApp()}}
	rng := catalog.NewRange(10, 20)
	ranges := []catalog.Range{
		{Range: catalog.Below(10), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		{Range: rng, Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		{Range: catalog.From(20), Shard: "s2", State: catalog.RangeServing, Epoch: 1},
	}
	if err := store.Init(ctx, cfg, shards, ranges, false); err != nil {
		t.Fatal(err)
	}
	fill := `INSERT INTO tenants SELECT g, 't' || g FROM generate_series(0, 29) g;
		INSERT INTO orders (tenant_id, total) SELECT g % 30, g FROM generate_series(1, 900) g`
	pgs[0].Exec(ctx, fill)
	// The target holds the range's rows, as a finished copy would.
	pgs[1].Exec(ctx, fill)
	pgs[1].Exec(ctx, `DELETE FROM orders WHERE tenant_id < 10 OR tenant_id >= 20; DELETE FROM tenants WHERE tenant_id < 10 OR tenant_id >= 20`)
	return Fixture{Store: store, Source: Connect(t, pgs[0].DSNApp()), Target: Connect(t, pgs[1].DSNApp()),
		Key: "tenant_id", Tables: tables, Range: rng}
}

// Migration writes the journal of migration m1, Range from s1 to s2, caught up.
func (f Fixture) Migration(t *testing.T) *catalog.Migration {
	t.Helper()
	m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: f.Range, Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp}
	if err := f.Store.PutMigration(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Connect opens a connection closed at cleanup.
func Connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// ErrRefused is what WritesRefused's writes return.
var ErrRefused = errors.New("refused: the migration's lock is held by another driver")

// WritesRefused is the catalog of a driver whose writes the store refuses (its lock was
// lost, or another driver moved the journal): reads go through, journal writes and
// unfreezes fail with ErrRefused.
type WritesRefused struct{ *catalog.Store }

// PutMigration refuses.
func (WritesRefused) PutMigration(context.Context, *catalog.Migration, ...catalog.WriteOption) error {
	return ErrRefused
}

// Unfreeze refuses.
func (WritesRefused) Unfreeze(context.Context, *catalog.State, int64, *catalog.Migration, ...catalog.WriteOption) error {
	return ErrRefused
}
