package cutover

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestWindowCompareProbesOnlyTheChangedKeys: the window's compare of the rows changed since
// the online verify reads each changed key through the primary key's index, one probe per
// key, and nothing else of the range, whatever the planner believes of it: here each table's
// statistics were taken before its range was filled (as on a target right after its copy),
// so the planner expects a few rows where there are 40,000. The plan of the compare, run,
// may not join by hash or merge, nor scan a table in any other way than an index scan, and
// the rows it reads are at most the keys. Plain and date-partitioned tables with composite
// keys by range; uuid and text keys by hash.
func TestWindowCompareProbesOnlyTheChangedKeys(t *testing.T) {
	ctx := context.Background()
	pg := shards(t, `ALTER SYSTEM SET autovacuum = off`)[0] // the statistics stay stale
	pg.Exec(ctx, `SELECT pg_reload_conf()`)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	pg.Exec(ctx, fmt.Sprintf(`
		CREATE TABLE orders (tenant_id bigint, id bigint, total numeric, PRIMARY KEY (tenant_id, id));
		CREATE TABLE events (tenant_id bigint, id bigint, at timestamptz, payload jsonb, PRIMARY KEY (tenant_id, id, at))
			PARTITION BY RANGE (at);
		CREATE TABLE events_d0 PARTITION OF events FOR VALUES FROM ('%[1]s') TO ('%[2]s');
		CREATE TABLE events_d1 PARTITION OF events FOR VALUES FROM ('%[2]s') TO ('%[3]s');
		CREATE TABLE events_d2 PARTITION OF events FOR VALUES FROM ('%[3]s') TO ('%[4]s');
		CREATE TABLE events_default PARTITION OF events DEFAULT;
		CREATE TABLE accounts (id uuid PRIMARY KEY, name text);
		CREATE TABLE docs (slug text, n int, body text, PRIMARY KEY (slug, n));
		INSERT INTO orders SELECT g %% 20, g, g FROM generate_series(1, 2000) g WHERE g %% 20 <> 5;
		INSERT INTO events SELECT g %% 20, g, '%[2]s'::timestamptz + g * interval '1 minute', '{}' FROM generate_series(1, 2000) g WHERE g %% 20 <> 5;
		INSERT INTO accounts SELECT md5('a' || g)::uuid, 'n' || g FROM generate_series(1, 200) g;
		INSERT INTO docs SELECT 'slug-' || g, 1, 'b' FROM generate_series(1, 200) g;`,
		day.AddDate(0, 0, -1).Format(time.RFC3339), day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339),
		day.AddDate(0, 0, 2).Format(time.RFC3339)))
	pg.Exec(ctx, `ANALYZE`)
	// The ranges' rows arrive after the statistics.
	pg.Exec(ctx, `
		INSERT INTO orders SELECT 5, g, g FROM generate_series(1, 40000) g;
		INSERT INTO events SELECT 5, g, now() - (g % 7200) * interval '1 minute', '{"k": 1}' FROM generate_series(1, 40000) g;
		INSERT INTO accounts SELECT md5('b' || g)::uuid, 'n' || g FROM generate_series(1, 80000) g;
		INSERT INTO docs SELECT 'doc-' || (g % 400), g, 'b' FROM generate_series(1, 80000) g;`)
	db := connect(t, pg.DSNApp())
	half := catalog.NewRange(-1<<62, 1<<62) // about half the hash line
	for _, tc := range []struct {
		name   string
		keys   catalog.Keyspace
		tables []string
		r      catalog.KeyRange
	}{
		{"range, plain and partitioned", catalog.RangeOn("tenant_id"), []string{"orders", "events"}, catalog.NewRange(5, 6)},
		{"hash, uuid", catalog.Keyspace{Key: "id", Type: catalog.KeyUUID, Distribution: catalog.DistHash}, []string{"accounts"}, half},
		{"hash, text", catalog.Keyspace{Key: "slug", Type: catalog.KeyText, Distribution: catalog.DistHash}, []string{"docs"}, half},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newOnlinePlan(ctx, db, tc.keys, tc.tables, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			types, err := readColumnTypes(ctx, db, tc.tables)
			if err != nil {
				t.Fatal(err)
			}
			c := changedRows{cols: map[string][]string{}, keys: map[string][][]string{}}
			for _, tb := range tc.tables {
				c.cols[tb] = p.pks[tb].cols
				c.keys[tb] = sampleKeys(t, db, p, tb, 100)
				c.keys[tb] = append(c.keys[tb], c.keys[tb][0]) // a key changed twice is listed twice
			}
			q, args, err := changedDigestsSQL(p, types, c, tc.tables)
			if err != nil {
				t.Fatal(err)
			}
			var plan []struct{ Plan planNode }
			var raw []byte
			if err := db.QueryRow(ctx, "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) "+q, args...).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
				t.Fatalf("EXPLAIN's JSON: %v", err)
			}
			probes := float64(len(tc.tables) * 101)
			if bad, read := plan[0].Plan.offRule(); len(bad) > 0 || read > probes {
				t.Errorf("the compare of %.0f keys reads %.0f rows of the range, with %s; want index probes only, at most one row each:\n%s",
					probes, read, strings.Join(bad, ", "), raw)
			}
			d, err := changedDigests(ctx, db, p, types, c, tc.tables)
			if err != nil {
				t.Fatal(err)
			}
			for _, dg := range d {
				if dg.Rows != 101 {
					t.Errorf("%s: %d rows compared; want the 101 keys (one of them twice)", dg.Table, dg.Rows)
				}
			}
		})
	}
}

// sampleKeys reads n primary keys of table t's rows in p's range, as text.
func sampleKeys(t *testing.T, db Querier, p *onlinePlan, tb string, n int) [][]string {
	t.Helper()
	rows, err := db.Query(context.Background(), fmt.Sprintf("SELECT ARRAY[%s] FROM %s x WHERE %s ORDER BY random() LIMIT %d",
		keyList(p.pks[tb].cols, "::text"), catalog.QuoteTable(tb), p.rangeSQL(tb), n))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		var k []string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	if len(out) != n {
		t.Fatalf("%s: %d keys in the range, want %d (%v)", tb, len(out), n, rows.Err())
	}
	return out
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON)'s plan.
type planNode struct {
	NodeType       string     `json:"Node Type"`
	Relation       string     `json:"Relation Name"`
	Loops          float64    `json:"Actual Loops"`
	Rows           float64    `json:"Actual Rows"`                   // per loop
	RemovedByIndex float64    `json:"Rows Removed by Index Recheck"` // per loop
	RemovedFilter  float64    `json:"Rows Removed by Filter"`        // per loop
	Plans          []planNode `json:"Plans"`
}

// offRule lists the nodes that ran and are not a key lookup's (a hash or merge join, a
// table read otherwise than by an index scan), and the rows the scans of tables read.
func (n planNode) offRule() (bad []string, read float64) {
	if n.Loops > 0 {
		switch {
		case n.NodeType == "Hash Join" || n.NodeType == "Merge Join":
			bad = append(bad, n.NodeType)
		case n.Relation != "" && n.NodeType != "Index Scan" && n.NodeType != "Index Only Scan":
			bad = append(bad, n.NodeType+" on "+n.Relation)
		}
		if n.Relation != "" {
			read += n.Loops * (n.Rows + n.RemovedByIndex + n.RemovedFilter)
		}
	}
	for _, c := range n.Plans {
		b, r := c.offRule()
		bad, read = append(bad, b...), read+r
	}
	return bad, read
}
