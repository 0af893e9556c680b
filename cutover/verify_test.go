package cutover

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestVerifyHashesColumnsByName: preflight matches columns by name, so verify must too. The
// same rows in tables whose physical column order differs between the shards (columns
// declared in another order, a column dropped on one side only) verify equal, with the
// hash functions and with the text fallback (json); a changed value, or two values of the
// same type swapped between columns, still mismatch.
func TestVerifyHashesColumnsByName(t *testing.T) {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	pgs[0].Exec(ctx, `
		CREATE TABLE orders (tenant_id bigint, id bigint, total numeric, note text, memo text, PRIMARY KEY (tenant_id, id));
		CREATE TABLE docs (tenant_id bigint, id bigint, body json, title text, PRIMARY KEY (tenant_id, id));`)
	pgs[1].Exec(ctx, `
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
		if v, err := Verify(ctx, src, dst, "tenant_id", tables, r); err != nil || v.Rows == 0 {
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
			if _, err := Verify(ctx, src, dst, "tenant_id", tables, r); !errors.Is(err, ErrMismatch) {
				t.Errorf("after %q: Verify %v = %v; want ErrMismatch", bad, tables, err)
			}
		}
		pgs[0].Exec(ctx, bad) // the same change on the source: equal again
		if _, err := Verify(ctx, src, dst, "tenant_id", sets[0], r); err != nil {
			t.Errorf("change %d made on both sides: Verify = %v; want equal", i, err)
		}
	}
}

// TestVerifyTextFallbackWhateverTheServersSettings: a table hashed through text (json has
// no hash function) verifies equal on two servers whose defaults write dates, times,
// floats and bytea differently.
func TestVerifyTextFallbackWhateverTheServersSettings(t *testing.T) {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	pgs[0].Exec(ctx, `ALTER DATABASE app SET DateStyle = 'SQL, DMY'`)
	pgs[0].Exec(ctx, `ALTER DATABASE app SET extra_float_digits = 0`)
	pgs[1].Exec(ctx, `ALTER DATABASE app SET TimeZone = 'Asia/Kolkata'`)
	pgs[1].Exec(ctx, `ALTER DATABASE app SET IntervalStyle = 'sql_standard'`)
	pgs[1].Exec(ctx, `ALTER DATABASE app SET bytea_output = 'escape'`)
	for _, p := range pgs {
		p.Exec(ctx, `CREATE TABLE docs (tenant_id bigint, id bigint, body json, d date, ts timestamptz, iv interval, f float8, b bytea, PRIMARY KEY (tenant_id, id));
			INSERT INTO docs SELECT g % 30, g, json_build_object('g', g), date '2024-02-01' + g, timestamptz '2024-03-04 05:06:07.5+00' + g * interval '5 hours',
				interval '1 day -02:00:00' * g, 1.0::float8 / (g + 2), ('\x00ff' || lpad(to_hex(g), 4, '0'))::bytea FROM generate_series(1, 300) g`)
	}
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	r := catalog.NewRange(10, 20)
	v, err := Verify(ctx, src, dst, "tenant_id", []string{"docs"}, r)
	if err != nil || v.Rows != 100 || !v.Source[0].Text {
		t.Fatalf("Verify = %+v, %v; want 100 equal rows hashed through text", v, err)
	}
	pgs[1].Exec(ctx, `UPDATE docs SET f = f + 1e-15 WHERE tenant_id = 12 AND id = 12`)
	if _, err := Verify(ctx, src, dst, "tenant_id", []string{"docs"}, r); !errors.Is(err, ErrMismatch) {
		t.Errorf("after a change in the 15th digit of a float: Verify = %v; want ErrMismatch", err)
	}
}
