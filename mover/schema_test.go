package mover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestAddColumnOnSourceWaitsForTheTarget adds a column (with a default) to a moved table on
// the source during the catch-up and writes it: the catch-up stops with one line naming the
// table, the column and the DDL to run on the target, and waits without failing; once that
// DDL runs on the target, it goes on by itself and the range ends identical, new column
// included.
func TestAddColumnOnSourceWaitsForTheTarget(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 6, 3, 50, 5)
	rng := catalog.NewRange(1, 4)
	j := newMemJournal()
	m := startMover(t, ctx, moveConfig(t, "add_col", srcPG, dstPG, testTables, rng), j)
	defer m.Stop(ctx)
	waitCaughtUp(t, ctx, m, src)

	mustExec(t, ctx, src, `ALTER TABLE accounts ADD COLUMN region text NOT NULL DEFAULT 'eu'`)
	mustExec(t, ctx, src, `INSERT INTO accounts (tenant_id, id, name, region) VALUES (2, 100, 'new', 'us')`)
	mustExec(t, ctx, src, `UPDATE accounts SET region = 'apac', balance = balance + 1 WHERE tenant_id = 3 AND id = 1`)
	mustExec(t, ctx, src, `INSERT INTO ledger (tenant_id, id, account_id, amount) VALUES (2, 9000, 100, 5)`)

	var line string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if err := m.Err(); err != nil {
			t.Fatalf("the catch-up stopped for good: %v", err)
		}
		if rec := j.get(t, "add_col"); strings.Contains(rec.LastError, "ALTER TABLE") {
			line = rec.LastError
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the journal never said what DDL the target needs")
		}
	}
	t.Logf("journal: %s", line)
	ddl := `ALTER TABLE "public"."accounts" ADD COLUMN "region" text DEFAULT 'eu'::text NOT NULL`
	for _, w := range []string{"public.accounts", `"region"`, "run on the target: " + ddl} {
		if !strings.Contains(line, w) {
			t.Errorf("the line lacks %q", w)
		}
	}
	if strings.Contains(line, "\n") {
		t.Errorf("more than one line: %q", line)
	}
	time.Sleep(2 * time.Second) // it waits, and does not fail
	if err := m.Err(); err != nil {
		t.Fatalf("the catch-up stopped for good while waiting: %v", err)
	}
	mustExec(t, ctx, dst, ddl)
	caughtUpAndSame(t, ctx, m, src, dst, rng)
	if n := count(t, ctx, dst, `SELECT count(*) FROM accounts WHERE region = 'us' AND tenant_id = 2 AND id = 100`); n != 1 {
		t.Errorf("the new column's value is not on the target")
	}
}
