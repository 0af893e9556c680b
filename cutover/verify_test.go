package cutover

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// TestVerifyHashesColumnsByName: preflight matches columns by name, so verify must too. The
// same rows in tables whose physical column order differs between the shards (columns
// declared in another order, a column dropped on one side only) verify equal, with the
// hash functions and with the text fallback (json); a changed value, or two values of the
// same type swapped between columns, still mismatch.
func TestVerifyHashesColumnsByName(t *testing.T) {
	ctx := context.Background()
	pgs := shards(t, `
		CREATE TABLE orders (tenant_id bigint, id bigint, total numeric, note text, memo text, PRIMARY KEY (tenant_id, id));
		CREATE TABLE docs (tenant_id bigint, id bigint, body json, title text, PRIMARY KEY (tenant_id, id));`, `
		CREATE TABLE orders (id bigint, gone int, memo text, note text, tenant_id bigint, total numeric, PRIMARY KEY (tenant_id, id));
		ALTER TABLE orders DROP COLUMN gone;
		CREATE TABLE docs (title text, body json, id bigint, tenant_id bigint, PRIMARY KEY (tenant_id, id));`)
	for _, p := range pgs {
		p.Exec(ctx, `
			INSERT INTO orders (tenant_id, id, total, note, memo) SELECT g % 30, g, g * 1.5, 'n' || g, 'm' || g FROM generate_series(1, 900) g;
			INSERT INTO docs (tenant_id, id, body, title) SELECT g % 30, g, json_build_object('g', g), 't' || g FROM generate_series(1, 300) g;`)
	}
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	r := catalog.NewRange(10, 20)
	sets := [][]string{{"orders", "docs"}, {"orders"}, {"docs"}}
	for _, tables := range sets {
		if v, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r); err != nil || v.Rows == 0 {
			t.Errorf("%v, same rows in another column order: Verify = %+v, %v; want equal", tables, v.Rows, err)
		}
	}
	for i, bad := range []string{
		`UPDATE orders SET total = total + 1 WHERE tenant_id = 12 AND id = 12`,
		`UPDATE orders SET note = memo, memo = note WHERE tenant_id = 13 AND id = 13`,
		`UPDATE docs SET title = 'x' WHERE tenant_id = 14 AND id = 14`,
	} {
		pgs[1].Exec(ctx, bad)
		for _, tables := range sets[:1] {
			if _, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r); !errors.Is(err, ErrMismatch) {
				t.Errorf("after %q: Verify %v = %v; want ErrMismatch", bad, tables, err)
			}
		}
		pgs[0].Exec(ctx, bad) // the same change on the source: equal again
		if _, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), sets[0], r); err != nil {
			t.Errorf("change %d made on both sides: Verify = %v; want equal", i, err)
		}
	}
}

// TestVerifyTextFallbackWhateverTheServersSettings: a table hashed through text (json has
// no hash function) verifies equal on two servers whose defaults write dates, times,
// floats and bytea differently.
func TestVerifyTextFallbackWhateverTheServersSettings(t *testing.T) {
	ctx := context.Background()
	pgs := shards(t, `ALTER DATABASE app SET DateStyle = 'SQL, DMY'`, `ALTER DATABASE app SET TimeZone = 'Asia/Kolkata'`)
	pgs[0].Exec(ctx, `ALTER DATABASE app SET extra_float_digits = 0`)
	pgs[1].Exec(ctx, `ALTER DATABASE app SET IntervalStyle = 'sql_standard'`)
	pgs[1].Exec(ctx, `ALTER DATABASE app SET bytea_output = 'escape'`)
	for _, p := range pgs {
		p.Exec(ctx, `CREATE TABLE docs (tenant_id bigint, id bigint, body json, d date, ts timestamptz, iv interval, f float8, b bytea, PRIMARY KEY (tenant_id, id));
			INSERT INTO docs SELECT g % 30, g, json_build_object('g', g), date '2024-02-01' + g, timestamptz '2024-03-04 05:06:07.5+00' + g * interval '5 hours',
				interval '1 day -02:00:00' * g, 1.0::float8 / (g + 2), ('\x00ff' || lpad(to_hex(g), 4, '0'))::bytea FROM generate_series(1, 300) g`)
	}
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	r := catalog.NewRange(10, 20)
	v, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), []string{"docs"}, r)
	if err != nil || v.Rows != 100 || !v.Source[0].Text {
		t.Fatalf("Verify = %+v, %v; want 100 equal rows hashed through text", v, err)
	}
	pgs[1].Exec(ctx, `UPDATE docs SET f = f + 1e-15 WHERE tenant_id = 12 AND id = 12`)
	if _, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), []string{"docs"}, r); !errors.Is(err, ErrMismatch) {
		t.Errorf("after a change in the 15th digit of a float: Verify = %v; want ErrMismatch", err)
	}
}

// TestDigestsLanes: the digests are the same whether a shard's tables are hashed in one
// statement, or shared out among several connections, or one statement per table; a
// column type without a hash function (json) falls back to hashing through text.
func TestDigestsLanes(t *testing.T) {
	ctx := context.Background()
	pg := shards(t, schema+`
		CREATE TABLE docs (tenant_id bigint, body json);
		INSERT INTO tenants SELECT g, 't' || g FROM generate_series(0, 29) g;
		INSERT INTO orders (tenant_id, total, note) SELECT g % 30, g, jsonb_build_object('g', g) FROM generate_series(1, 900) g;
		INSERT INTO docs SELECT g % 30, json_build_object('g', g) FROM generate_series(1, 90) g;`)[0]
	conns := []Querier{connect(t, pg.DSNApp()), connect(t, pg.DSNApp()), connect(t, pg.DSNApp())}
	r := catalog.NewRange(10, 20)
	cols, err := ReadColumns(ctx, conns[0], []string{"tenants", "orders", "docs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tables := range [][]string{{"tenants", "orders"}, {"tenants", "orders", "docs"}} {
		var want []TableDigest
		for _, tb := range tables {
			d, err := Digest(ctx, conns[0], tb, catalog.RangeOn("tenant_id"), cols[tb], r)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, d)
		}
		for lanes := 1; lanes <= len(conns); lanes++ {
			t.Run(fmt.Sprintf("%d tables on %d connections", len(tables), lanes), func(t *testing.T) {
				got, err := digests(ctx, conns[:lanes], catalog.RangeOn("tenant_id"), tables, cols, r)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if got[i].Table != want[i].Table || got[i].Rows != want[i].Rows || got[i].Hash != want[i].Hash {
						t.Errorf("table %d: %+v, want %+v", i, got[i], want[i])
					}
				}
				warmDigests(ctx, conns[:lanes], catalog.RangeOn("tenant_id"), tables, cols, r) // must not break a connection
			})
		}
	}
	if _, err := Verify(ctx, conns[0], conns[1], catalog.RangeOn("tenant_id"), []string{"tenants", "orders", "docs"}, r); err != nil {
		t.Fatalf("Verify of a shard with itself: %v", err)
	}
}

func TestVerifySequencesDelete(t *testing.T) {
	ctx := context.Background()
	pgs, src, dst := twoShards(t, schema)
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
	v, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r)
	if err != nil || v.Rows != 1000 {
		t.Fatalf("Verify equal = %+v, %v", v, err)
	}
	for _, bad := range []string{
		`UPDATE orders SET total = total + 1 WHERE id = (SELECT min(id) FROM orders WHERE tenant_id = 12)`,
		`INSERT INTO orders SELECT tenant_id, id + 100000, total, note FROM orders WHERE tenant_id = 12 LIMIT 1`,
	} {
		pgs[1].Exec(ctx, `BEGIN; `+bad+`; COMMIT`)
		if _, err := Verify(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r); !errors.Is(err, ErrMismatch) {
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
	if err := InstallGuard(ctx, src, catalog.RangeOn("tenant_id"), tables); err != nil {
		t.Fatal(err)
	}
	if err := SetFence(ctx, src, "m1", r, tables, 1); err != nil {
		t.Fatal(err)
	}
	before, err := demo.Fingerprint(ctx, src, tables)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DeleteRange(ctx, src, catalog.RangeOn("tenant_id"), tables, r, DeleteOptions{BatchRows: 128})
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
