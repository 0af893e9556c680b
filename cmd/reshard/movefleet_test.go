package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// moveSchema is the sharded tables of the move commands' tests.
const moveSchema = `
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL,
  PRIMARY KEY (tenant_id, id, created)) PARTITION BY RANGE (created);
CREATE TABLE events_p2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
`

var moveTables = []string{"tenants", "orders", "events"}

// moveFleet is two real shards, s1 with tenants 1..50 (range :1000) and s2 with tenants
// 1000..1049 (range 1000:), a third shard s3 that cannot be reached, and a catalog of them
// in an embedded etcd. It returns the catalog and the shards' databases.
func moveFleet(t *testing.T, cluster string) (*cliCatalog, map[string]*testenv.PG) {
	t.Helper()
	return moveFleetWith(t, cluster, func(name string, pg *testenv.PG) catalog.Shard {
		return catalog.Shard{Name: name, DSN: pg.DSNApp()}
	})
}

// moveFleetWith is moveFleet with s1 and s2 as shard makes them (from their names and
// databases), e.g. with a DSN read from a variable.
func moveFleetWith(t *testing.T, cluster string, shard func(name string, pg *testenv.PG) catalog.Shard) (*cliCatalog, map[string]*testenv.PG) {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	ctx := testContext(t, 2*time.Minute)
	for i, pg := range pgs {
		lo := []int{1, 1000}[i]
		pg.Exec(ctx, moveSchema+fmt.Sprintf(`
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(%[1]d, %[1]d + 49) g;
INSERT INTO orders SELECT %[1]d + g %% 50, g, 'o' FROM generate_series(1, 500) g;
INSERT INTO events SELECT %[1]d + g %% 50, g, date '2025-03-01' + (g %% 200) FROM generate_series(1, 300) g;`, lo))
	}
	shards := []catalog.Shard{shard("s1", pgs[0]), shard("s2", pgs[1]),
		{Name: "s3", DSN: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app connect_timeout=2", closedPort(t))}}
	ranges := []catalog.Range{
		{Range: catalog.KeyRange{Lo: catalog.Full.Lo, Hi: 1000}, Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		{Range: catalog.From(1000), Shard: "s2", State: catalog.RangeServing, Epoch: 1},
	}
	env := newCatalog(t, ctx, catalog.Config{Cluster: cluster, Key: "tenant_id", Tables: moveTables}, shards, ranges)
	return env, map[string]*testenv.PG{"s1": pgs[0], "s2": pgs[1]}
}

// shardState is everything a refused command must leave as it was on a shard: the rows
// of every tenant in every table, and reshard's objects.
func shardState(t *testing.T, ctx context.Context, pg *testenv.PG) string {
	t.Helper()
	c, err := pgx.Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var b strings.Builder
	for _, tbl := range moveTables {
		var rows string
		if err := c.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(string_agg(tenant_id || ':' || n || ':' || h, ' ' ORDER BY tenant_id), '')
			FROM (SELECT tenant_id, count(*) AS n, sum(hashtext(t::text)) AS h FROM %s t GROUP BY tenant_id) s`, tbl)).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: %s\n", tbl, rows)
	}
	var objs string
	if err := c.QueryRow(ctx, `SELECT concat_ws(' ',
		(SELECT string_agg('slot ' || slot_name, ' ') FROM pg_replication_slots),
		(SELECT string_agg('publication ' || pubname, ' ') FROM pg_publication),
		(SELECT string_agg('trigger ' || tgname, ' ') FROM pg_trigger WHERE tgname LIKE 'reshard%'),
		(SELECT string_agg('schema ' || nspname, ' ') FROM pg_namespace WHERE nspname = 'reshard'))`).Scan(&objs); err != nil {
		t.Fatal(err)
	}
	b.WriteString("objects: " + objs + "\n")
	return b.String()
}

func etcdRevision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/reshard/")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// tenantEntries maps "table/tenant" to "rows:hash" from a shardState.
func tenantEntries(state string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(state, "\n") {
		tbl, rest, ok := strings.Cut(line, ": ")
		if !ok || tbl == "objects" {
			continue
		}
		for _, f := range strings.Fields(rest) {
			parts := strings.SplitN(f, ":", 2)
			out[tbl+"/"+parts[0]] = parts[1]
		}
	}
	return out
}
