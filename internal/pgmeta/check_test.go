package pgmeta

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/testenv"

	"github.com/reshard/reshard/catalog"
)

// schema is the sharded tables of these tests, and tables that break each rule.
const schema = `
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text);
CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL, PRIMARY KEY (tenant_id, id, created))
  PARTITION BY RANGE (created);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2030-01-01') TO ('2040-01-01');
-- broken ones
CREATE TABLE nokey (id bigint PRIMARY KEY);
CREATE TABLE intkey (tenant_id int NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));
CREATE TABLE nopk (tenant_id bigint NOT NULL, id bigint);
CREATE TABLE pkwithoutkey (id bigint PRIMARY KEY, tenant_id bigint);
CREATE TABLE ridx (id bigint PRIMARY KEY, tenant_id bigint NOT NULL);
CREATE UNIQUE INDEX ridx_key ON ridx (tenant_id, id);
CREATE TABLE rinothing (tenant_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
ALTER TABLE rinothing REPLICA IDENTITY NOTHING;
CREATE TABLE rifull (tenant_id bigint, id bigint PRIMARY KEY);
ALTER TABLE rifull REPLICA IDENTITY FULL;
CREATE TABLE badpart (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL, PRIMARY KEY (tenant_id, id, created))
  PARTITION BY RANGE (created);
CREATE TABLE badpart_p1 PARTITION OF badpart FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
ALTER TABLE badpart_p1 REPLICA IDENTITY NOTHING;
`

// shardWith starts a shard, runs sql on it (the schema, rows) and returns it with a
// connection that is closed at cleanup.
func shardWith(t *testing.T, sql string) (*testenv.PG, *pgx.Conn) {
	t.Helper()
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, sql)
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return pg, conn
}

// TestCheckShard: good tables pass; each broken one gets one problem with its fix, and the
// suggested fix works.
func TestCheckShard(t *testing.T) {
	_, conn := shardWith(t, schema)
	ctx := context.Background()

	problems, err := CheckShard(ctx, conn, catalog.RangeOn("tenant_id"), []string{"tenants", "orders", "events", "rifull"})
	if err != nil || len(problems) != 0 {
		t.Fatalf("good tables: %v %v", problems, err)
	}
	tests := []struct {
		table string
		want  []string // substrings of the one problem; nil: none
	}{
		{"missing", []string{"does not exist"}},
		{"nokey", []string{"has no column tenant_id"}},
		{"intkey", []string{"is integer, not bigint", `ALTER COLUMN "tenant_id" TYPE bigint`}},
		{"nopk", []string{"no primary key", "ADD PRIMARY KEY (tenant_id, id)"}},
		{"pkwithoutkey", []string{"primary key pkwithoutkey_pkey (id), which does not include tenant_id", "ALTER COLUMN tenant_id SET NOT NULL", "REPLICA IDENTITY USING INDEX pkwithoutkey_tenant_id_ri"}},
		{"ridx", []string{"does not include tenant_id", "ALTER TABLE public.ridx REPLICA IDENTITY USING INDEX ridx_key"}},
		{"rinothing", []string{"REPLICA IDENTITY NOTHING", "USING INDEX"}},
		{"badpart", []string{"partition public.badpart_p1 of badpart", "REPLICA IDENTITY NOTHING"}},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			ps, err := CheckTable(ctx, conn, catalog.RangeOn("tenant_id"), tt.table)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(ps, "\n")
			if len(ps) == 0 {
				t.Fatalf("no problem found, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems %q lack %q", all, w)
				}
			}
		})
	}
	// The suggested fix really works.
	if _, err := conn.Exec(ctx, "ALTER TABLE public.ridx REPLICA IDENTITY USING INDEX ridx_key"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := CheckTable(ctx, conn, catalog.RangeOn("tenant_id"), "ridx"); len(ps) != 0 {
		t.Errorf("after the fix: %v", ps)
	}
}

// TestWalLevelNotLogical: a shard without logical WAL is one problem, and no write sample.
func TestWalLevelNotLogical(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, "ALTER SYSTEM SET wal_level = replica")
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pg.Exec(ctx, "CREATE TABLE t (tenant_id bigint, id bigint, PRIMARY KEY (tenant_id, id))")
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ps, err := CheckShard(ctx, conn, catalog.RangeOn("tenant_id"), []string{"t"})
	if err != nil || len(ps) != 1 || !strings.Contains(ps[0], "wal_level is replica, not logical") {
		t.Fatalf("CheckShard = %v, %v", ps, err)
	}
	_, err = SampleWrites(ctx, conn, catalog.RangeOn("tenant_id"), []string{"t"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "wal_level") {
		t.Errorf("SampleWrites without logical WAL = %v", err)
	}
}
