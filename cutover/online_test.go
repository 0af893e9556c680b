package cutover

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestOnlineVerifyNamesEachDifferingKey: the chunked comparison finds, whatever chunk a
// row falls in (the first, a middle one, the last, past the source's last key), a row
// that differs, one missing on either side and one only the target has past the source's
// last key; it names each by its primary key, lists at most ReportKeys of them and writes
// every one to DiffOut. Rows outside the range and tables that are equal are not reported;
// a json column (no hash function) is hashed through text.
func TestOnlineVerifyNamesEachDifferingKey(t *testing.T) {
	ctx := context.Background()
	pgs, src, dst := twoShards(t, `
		CREATE TABLE orders (tenant_id bigint, id bigint, total numeric, PRIMARY KEY (tenant_id, id));
		CREATE TABLE docs (tenant_id bigint, id bigint, body json, PRIMARY KEY (tenant_id, id));
		INSERT INTO orders SELECT g % 30, g, g * 1.5 FROM generate_series(1, 900) g;
		INSERT INTO docs SELECT g % 30, g, json_build_object('g', g) FROM generate_series(1, 300) g;`)
	r := catalog.NewRange(10, 20)
	tables := []string{"orders", "docs"}
	opts := OnlineOptions{ChunkRows: 7}
	if v, err := VerifyShards(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r, opts); err != nil || v.Rows != 400 || v.Chunks < 50 {
		t.Fatalf("equal shards: %+v, %v; want 400 rows in many chunks, equal", v, err)
	}
	pgs[1].Exec(ctx, `
		UPDATE orders SET total = 0 WHERE tenant_id = 10 AND id = 10;  -- the first chunk
		DELETE FROM orders WHERE tenant_id = 15 AND id = 465;           -- a middle one
		INSERT INTO orders VALUES (19, 5000, 1);                       -- past the last key
		UPDATE orders SET total = 0 WHERE tenant_id = 25 AND id = 25;  -- outside the range
		UPDATE docs SET body = '{"g": 0}' WHERE tenant_id = 12 AND id = 12`)
	pgs[0].Exec(ctx, `INSERT INTO orders VALUES (11, 7000, 1)`) // only on the source
	var out strings.Builder
	opts.ReportKeys, opts.DiffOut = 3, &out
	v, err := VerifyShards(ctx, src, dst, catalog.RangeOn("tenant_id"), tables, r, opts)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("VerifyShards = %v; want ErrMismatch", err)
	}
	want := []string{
		"orders (tenant_id, id)=(10, 10): differs",
		"orders (tenant_id, id)=(11, 7000): missing on target",
		"orders (tenant_id, id)=(15, 465): missing on target",
		"orders (tenant_id, id)=(19, 5000): missing on source",
		"docs (tenant_id, id)=(12, 12): differs",
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w+"\n") {
			t.Errorf("DiffOut lacks %q:\n%s", w, out.String())
		}
	}
	if v.DiffCount != len(want) || len(v.Diffs) != 3 || strings.Count(out.String(), "\n") != len(want) {
		t.Errorf("%d differences, %d listed, DiffOut:\n%s; want %d, 3 listed", v.DiffCount, len(v.Diffs), out.String(), len(want))
	}
	if !strings.Contains(err.Error(), want[0]) {
		t.Errorf("error %q does not name %q", err, want[0])
	}
}

// TestCompareChangedComparesOnlyTheGivenKeys: the window's compare reads the given keys'
// rows only, on both sides, and names the one that differs; a difference in a row it was
// not given is not its business (the online verify saw that row equal, and nothing
// changed it since).
func TestCompareChangedComparesOnlyTheGivenKeys(t *testing.T) {
	ctx := context.Background()
	pgs, src, dst := twoShards(t, `
		CREATE TABLE orders (tenant_id bigint, id bigint, total numeric, PRIMARY KEY (tenant_id, id));
		INSERT INTO orders SELECT g % 30, g, g * 1.5 FROM generate_series(1, 900) g;`)
	r := catalog.NewRange(10, 20)
	p, err := newOnlinePlan(ctx, src, catalog.RangeOn("tenant_id"), []string{"orders"}, r)
	if err != nil {
		t.Fatal(err)
	}
	types, err := readColumnTypes(ctx, src, []string{"orders"})
	if err != nil {
		t.Fatal(err)
	}
	pgs[1].Exec(ctx, `UPDATE orders SET total = 0 WHERE tenant_id = 13 AND id IN (13, 43)`)
	ch := changedRows{cols: map[string][]string{"orders": {"tenant_id", "id"}},
		keys: map[string][][]string{"orders": {{"12", "12"}, {"13", "13"}, {"14", "9999"}}}}
	n, err := compareChanged(ctx, src, dst, p, types, ch)
	if n != 3 || !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "orders (tenant_id, id)=(13, 13): differs") ||
		strings.Contains(err.Error(), "43") {
		t.Errorf("compareChanged = %d, %v; want 3 rows compared, (13, 13) named and (13, 43) not", n, err)
	}
	ch.keys["orders"] = [][]string{{"12", "12"}, {"14", "44"}}
	if n, err := compareChanged(ctx, src, dst, p, types, ch); n != 2 || err != nil {
		t.Errorf("equal rows: compareChanged = %d, %v", n, err)
	}
}
