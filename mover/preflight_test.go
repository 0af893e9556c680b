package mover

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
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

// TestStartRefusesSequencesTheTargetLacks: a sequence behind the moved tables' ids that the
// target lacks, or has of another type or direction, is refused by the preflight before
// anything is copied, one line each naming the sequence, the shard and what to do; every
// tenant's rows on both shards stay as they were and nothing is created on either.
func TestStartRefusesSequencesTheTargetLacks(t *testing.T) {
	ctx := context.Background()
	rng := catalog.NewRange(3, 6)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 8, 3, 4, 2)
	mustExec(t, ctx, src, `CREATE SEQUENCE ledger_ids; SELECT setval('ledger_ids', 5000);
		ALTER TABLE ledger ALTER id SET DEFAULT nextval('ledger_ids');
		CREATE SEQUENCE doc_ids INCREMENT BY -1; ALTER TABLE docs ALTER id SET DEFAULT nextval('doc_ids');
		CREATE SEQUENCE account_ids AS bigint; ALTER TABLE accounts ALTER id SET DEFAULT nextval('account_ids')`)
	mustExec(t, ctx, dst, `CREATE SEQUENCE doc_ids; ALTER TABLE docs ALTER id SET DEFAULT nextval('doc_ids');
		CREATE SEQUENCE account_ids AS integer; ALTER TABLE accounts ALTER id SET DEFAULT nextval('account_ids')`)
	before := map[string]demo.Fingerprints{}
	for side, db := range map[string]*pgxpool.Pool{"source": src, "target": dst} {
		f, err := demo.Fingerprint(ctx, db, testTables)
		if err != nil {
			t.Fatal(err)
		}
		before[side] = f
	}
	m, err := New(moveConfig(t, "seqs", srcPG, dstPG, testTables, rng), newMemJournal())
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(ctx)
	if err == nil {
		defer func() { _ = m.Cancel(ctx) }()
	}
	var pe *PreflightError
	if !errors.As(err, &pe) {
		t.Fatalf("Start = %v, want a *PreflightError", err)
	}
	t.Logf("%v", err)
	for _, want := range []string{
		"target: sequence public.ledger_ids does not exist: create it as on the source (CREATE SEQUENCE public.ledger_ids AS bigint INCREMENT BY 1",
		"target: sequence public.doc_ids is descending on the source but ascending on the target: ALTER SEQUENCE public.doc_ids INCREMENT BY -1",
		"target: sequence public.account_ids is bigint on the source but integer on the target: ALTER SEQUENCE public.account_ids AS bigint",
	} {
		found := false
		for _, p := range pe.Problems {
			found = found || strings.HasPrefix(p, want) && !strings.Contains(p, "\n")
		}
		if !found {
			t.Errorf("preflight does not report, on one line, %q", want)
		}
	}
	for side, db := range map[string]*pgxpool.Pool{"source": src, "target": dst} {
		f, err := demo.Fingerprint(ctx, db, testTables)
		if err != nil {
			t.Fatal(err)
		}
		if err := before[side].Diff("the "+side, f); err != nil {
			t.Errorf("rows on the %s changed: %v", side, err)
		}
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Errorf("preflight created %v on the source", l)
	}
	if n := count(t, ctx, dst, `SELECT count(*) FROM pg_namespace WHERE nspname = 'reshard'`) +
		count(t, ctx, dst, `SELECT count(*) FROM pg_class WHERE relname = 'ledger_ids'`); n != 0 {
		t.Errorf("preflight created the reshard schema or the sequence on the target")
	}
}
