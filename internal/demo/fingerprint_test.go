package demo

import (
	"context"
	"strings"
	"testing"

	"github.com/reshard/reshard/internal/testenv"
)

// TestFingerprintTextFallback: a table with a column type that has no hash function (json)
// is fingerprinted through the rows' text, and a changed value still shows.
func TestFingerprintTextFallback(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE notes (tenant_id bigint NOT NULL, id int NOT NULL, j json, PRIMARY KEY (tenant_id, id));
		INSERT INTO notes SELECT t, i, json_build_object('i', i) FROM generate_series(1, 3) t, generate_series(1, 4) i`)
	db := pg.Pool(ctx)
	a, err := Fingerprint(ctx, db, []string{"notes"})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3 || a[2]["notes"].Rows != 4 {
		t.Fatalf("fingerprint %+v", a)
	}
	pg.Exec(ctx, `UPDATE notes SET j = '{"i": 99}' WHERE tenant_id = 2 AND id = 1`)
	b, err := Fingerprint(ctx, db, []string{"notes"})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Diff("s1", b)
	if err == nil || !strings.Contains(err.Error(), "tenant 2: notes on s1: 4 rows as expected but their contents differ") || strings.Contains(err.Error(), "tenant 1") {
		t.Fatalf("Diff = %v", err)
	}
}

// TestFingerprintColumnOrder: the same rows in tables whose physical column order differs
// (columns added in another order on another shard) have the same fingerprint.
func TestFingerprintColumnOrder(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE a (tenant_id bigint NOT NULL, x int, y text);
		CREATE TABLE b (y text, dropped int, tenant_id bigint NOT NULL, x int);
		ALTER TABLE b DROP COLUMN dropped;
		INSERT INTO a SELECT t, i, 'v' || i FROM generate_series(1, 3) t, generate_series(1, 5) i;
		INSERT INTO b (tenant_id, x, y) SELECT tenant_id, x, y FROM a`)
	f, err := Fingerprint(ctx, pg.Pool(ctx), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for tenant, tables := range f {
		if tables["a"] != tables["b"] || tables["a"].Rows != 5 {
			t.Errorf("tenant %d: a %+v, b %+v", tenant, tables["a"], tables["b"])
		}
	}
}

// TestFingerprintOverBaselineColumns: fingerprints over the columns a baseline had ignore a
// column added since (its default fills every row) and still see a changed value of those
// columns; over all live columns, the same rows differ once the new column is set.
func TestFingerprintOverBaselineColumns(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE items (tenant_id bigint NOT NULL, id int NOT NULL, v text, PRIMARY KEY (tenant_id, id));
		INSERT INTO items SELECT t, i, 'v' || i FROM generate_series(1, 3) t, generate_series(1, 4) i`)
	db := pg.Pool(ctx)
	base, err := TableColumns(ctx, db, []string{"items"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := FingerprintColumns(ctx, db, []string{"items"}, base)
	if err != nil {
		t.Fatal(err)
	}
	pg.Exec(ctx, `ALTER TABLE items ADD COLUMN region text NOT NULL DEFAULT 'eu';
		UPDATE items SET region = 'us' WHERE tenant_id = 1;
		UPDATE items SET v = 'changed' WHERE tenant_id = 3 AND id = 1`)
	for _, tc := range []struct {
		name string
		cols Columns
		want []string // tenants whose rows differ
	}{
		{"the baseline's columns", base, []string{"tenant 3"}},
		{"all live columns", nil, []string{"tenant 1", "tenant 2", "tenant 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after, err := FingerprintColumns(ctx, db, []string{"items"}, tc.cols)
			if err != nil {
				t.Fatal(err)
			}
			err = before.Diff("s1", after)
			for _, tenant := range []string{"tenant 1", "tenant 2", "tenant 3"} {
				want := strings.Contains(strings.Join(tc.want, ","), tenant)
				if got := err != nil && strings.Contains(err.Error(), tenant+":"); got != want {
					t.Errorf("%s differs: %v, want %v (%v)", tenant, got, want, err)
				}
			}
		})
	}
}

// TestFingerprintQuotesSchemaQualifiedMixedCaseNames: a table named as the rest of reshard
// names it (schema.table, taken exactly: Billing.Invoices is the mixed-case table in the
// mixed-case schema) is found and fingerprinted, not looked up as one quoted identifier.
func TestFingerprintQuotesSchemaQualifiedMixedCaseNames(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE SCHEMA "Billing"; CREATE TABLE "Billing"."Invoices" (tenant_id bigint NOT NULL, "Amount" int, PRIMARY KEY (tenant_id, "Amount"));
		INSERT INTO "Billing"."Invoices" SELECT t, i FROM generate_series(1, 2) t, generate_series(1, 3) i`)
	f, err := Fingerprint(ctx, pg.Pool(ctx), []string{"Billing.Invoices"})
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 2 || f[1]["Billing.Invoices"].Rows != 3 || f[2]["Billing.Invoices"].Rows != 3 {
		t.Fatalf("fingerprint %+v", f)
	}
}
