package mover

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestPreflightListsEveryProblem: preflight reports all problems at once and changes
// nothing.
func TestPreflightListsEveryProblem(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, schema+`
		CREATE TABLE byemail (tenant_id bigint NOT NULL, id bigint PRIMARY KEY, email text NOT NULL UNIQUE);
		ALTER TABLE byemail REPLICA IDENTITY USING INDEX byemail_email_key;
		CREATE TABLE nokey (tenant_id bigint NOT NULL, v text);`)
	mustExec(t, ctx, dst, `DROP TABLE docs; ALTER TABLE ledger ALTER COLUMN memo TYPE varchar(20); ALTER TABLE accounts ADD COLUMN extra int`)
	mustExec(t, ctx, dst, `INSERT INTO ledger SELECT 3, 1, 1, 1, 'x' FROM (SELECT 1) s WHERE false`)
	mustExec(t, ctx, dst, `ALTER TABLE ledger DROP CONSTRAINT ledger_tenant_id_account_id_fkey; INSERT INTO ledger VALUES (3, 1, 1, 1, 'on target')`)
	err := Preflight(ctx, Config{ID: "pf", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: []string{"accounts", "ledger", "docs", "byemail", "nokey", "missing"}, Range: catalog.NewRange(1, 5)})
	var pe *PreflightError
	if !errors.As(err, &pe) {
		t.Fatalf("Preflight = %v, want a *PreflightError", err)
	}
	t.Logf("%v", err)
	for _, want := range []string{
		`source: replica identity of byemail does not include "tenant_id"`,
		"source: table nokey has no primary key",
		"source: table missing does not exist",
		"target: table docs does not exist",
		"target: table missing does not exist",
		`target: table ledger: column "memo" is text on the source but character varying(20) on the target`,
		"target: table accounts: the target has columns the source lacks: extra",
		"target: table ledger already holds rows of range 1:5",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("preflight does not report %q", want)
		}
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("preflight created %v", l)
	}
	var schemas int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`).Scan(&schemas); err != nil || schemas != 0 {
		t.Fatalf("preflight changed the target (%v)", err)
	}
	// A bad configuration is refused before any connection.
	if _, err := New(Config{ID: "", Tables: []string{"a.b.c"}, Range: catalog.NewRange(5, 5)}, newMemJournal()); err == nil ||
		!strings.Contains(err.Error(), "migration id is empty") || !strings.Contains(err.Error(), "a.b.c") || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("New with a bad config: %v", err)
	}
}
