package mover

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

const typesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kinds (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	title     text,
	n         numeric(20,6),
	n2        numeric,
	f         double precision,
	ts        timestamptz,
	d         date,
	iv        interval,
	u         uuid,
	j         jsonb,
	js        json,
	ia        integer[],
	ta        text[],
	b         bytea,
	ok        boolean,
	addr      inet,
	big       text,
	bigj      jsonb,
	PRIMARY KEY (tenant_id, id)
);
-- An array of a user-defined type: binary COPY would carry its OID, so this table is
-- copied in text format.
CREATE TABLE tagged (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	m         mood,
	ms        mood[],
	note      text,
	PRIMARY KEY (tenant_id, id)
);
`

const kindsRow = `INSERT INTO kinds (tenant_id, id, title, n, n2, f, ts, d, iv, u, j, js, ia, ta, b, ok, addr, big, bigj)
SELECT $1::bigint, $2::bigint, 'row ' || $2, 123456.789012, 1e-30 + $2, 0.1 + $2, '2024-02-29 23:59:59.999999+05:30', '0001-01-01',
	'1 year 2 mons 3 days 04:05:06.789', gen_random_uuid(), '{"a": [1, 2.50, null, "x\"y"], "b": {"c": true}}', '{"keep":   "spacing"}',
	ARRAY[1, NULL, -3], ARRAY['a', NULL, 'with "quotes"', 'comma,brace}'], '\x00ff10'::bytea || convert_to(repeat('é', 3), 'UTF8'),
	true, '10.1.2.3/8', $3, jsonb_build_object('blob', $3::text, 'n', $2)`

// TestTypesAndToast moves rows of every common type, NULLs and large TOASTed values through
// the copy and the apply, including updates that leave a TOASTed value unchanged and a row
// that enters the range (by an UPDATE of its key) with one.
func TestTypesAndToast(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, typesSchema)
	rng := catalog.NewRange(10, 20)
	big := func(seed int) string {
		r := newRand(seed)
		return bigText(r, 6000)
	}
	for i := 1; i <= 20; i++ {
		for _, tn := range []int{5, 10, 15, 25} {
			if _, err := src.Exec(ctx, kindsRow, tn, i, big(i*tn)); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustExec(t, ctx, src, `INSERT INTO kinds (tenant_id, id) VALUES (10, 100), (15, 100)`) // all NULLs
	mustExec(t, ctx, src, `INSERT INTO tagged SELECT t, i, 'ok', ARRAY['sad', 'happy']::mood[], 'n' || i FROM generate_series(9, 20) t, generate_series(1, 5) i`)
	seedNeighbours(t, ctx, src, dst, []string{"kinds", "tagged"}, rng)

	j := newMemJournal()
	m, err := New(Config{ID: "types", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: []string{"kinds", "tagged"}, Range: rng, Logger: testLogger(t)}, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx)
	assertSame(t, ctx, src, dst, []string{"kinds", "tagged"}, rng)

	// Catch-up: every kind of change.
	for i := 21; i <= 25; i++ {
		if _, err := src.Exec(ctx, kindsRow, 12, i, big(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`UPDATE kinds SET title = 'toast unchanged' WHERE tenant_id = 10 AND id <= 5`,
		`UPDATE kinds SET n = n + 1, ts = ts + interval '1 day', ia = ia || 4 WHERE tenant_id = 15 AND id BETWEEN 6 AND 8`,
		`UPDATE kinds SET big = big || 'x', bigj = bigj || '{"more": 1}' WHERE tenant_id = 10 AND id = 9`,
		`UPDATE kinds SET title = NULL, n = NULL, j = NULL, ia = NULL, b = NULL, big = NULL WHERE tenant_id = 15 AND id = 10`,
		`UPDATE kinds SET n2 = 42 WHERE tenant_id = 10 AND id = 100`,
		// Into the range with unchanged TOASTed values (the UPDATE arrives as an INSERT).
		`UPDATE kinds SET tenant_id = 11 WHERE tenant_id = 5 AND id IN (1, 2, 3)`,
		`UPDATE kinds SET tenant_id = 13 WHERE tenant_id = 25 AND id = 4`,
		// Out of the range (arrives as a DELETE), and a key change inside it.
		`UPDATE kinds SET tenant_id = 30 WHERE tenant_id = 15 AND id = 11`,
		`UPDATE kinds SET id = id + 1000 WHERE tenant_id = 15 AND id = 12`,
		// Enters the range, then moves inside it and is edited, before the mover sees it.
		`BEGIN; UPDATE kinds SET tenant_id = 14 WHERE tenant_id = 5 AND id = 7; UPDATE kinds SET tenant_id = 16 WHERE tenant_id = 14 AND id = 7;
		 UPDATE kinds SET title = 'moved twice' WHERE tenant_id = 16 AND id = 7; COMMIT`,
		`DELETE FROM kinds WHERE tenant_id = 10 AND id IN (13, 14)`,
		`UPDATE tagged SET ms = ms || 'ok'::mood, m = NULL WHERE tenant_id = 12`,
		`UPDATE tagged SET tenant_id = 30 WHERE tenant_id = 13`,
		`INSERT INTO tagged VALUES (19, 9, 'happy', '{}', NULL)`,
	} {
		mustExec(t, ctx, src, q)
	}
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, []string{"kinds", "tagged"}, rng)
	var n int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM kinds WHERE tenant_id = 11 AND length(big) = 6000 AND bigj ? 'blob'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("rows that entered the range kept %d of 3 TOASTed values (%v)", n, err)
	}
	// The large values really were stored out of line on the source.
	var toasted bool
	if err := src.QueryRow(ctx, `SELECT pg_column_size(big) < length(big) OR pg_relation_size(reltoastrelid) > 0 FROM kinds, pg_class WHERE pg_class.relname = 'kinds' LIMIT 1`).Scan(&toasted); err != nil || !toasted {
		t.Fatalf("large values not TOASTed: %v", err)
	}
}

func mustExec(t testing.TB, ctx context.Context, db execer, sql string) {
	t.Helper()
	if _, err := db.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestCancelAndCleanup: after Cancel no reshard_ slot or publication is left and the
// target holds none of the range; Cancel works for a dead process from the journal alone,
// is idempotent, and refuses a migration that has flipped.
func TestCancelAndCleanup(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 6, 5, 200, 10)
	rng := catalog.NewRange(2, 5)
	// Rows outside the range on the target are not the mover's and must survive.
	seedNeighbours(t, ctx, src, dst, testTables, rng)
	j := newMemJournal()
	cfg := Config{ID: "cancel-me", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: testTables, Range: rng, Logger: testLogger(t)}

	// A mover whose process "dies" during catch-up.
	runCtx, kill := context.WithCancel(ctx)
	m1, _ := New(cfg, j)
	if err := m1.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, src, `UPDATE accounts SET name = 'x' WHERE tenant_id = 3`)
	// From here on nothing writes to the source: the mover only reads it.
	srcBefore, err := demo.Fingerprint(ctx, src, testTables)
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, m1, src)
	kill()
	time.Sleep(200 * time.Millisecond)
	if n := len(rangeRows(t, ctx, dst, "ledger", rng)); n == 0 {
		t.Fatal("nothing was copied")
	}

	// Cancelled by another process that only has the journal.
	m2, _ := New(cfg, j)
	if err := m2.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("left on the source after Cancel: %v", l)
	}
	for _, tbl := range testTables {
		if n := len(rangeRows(t, ctx, dst, tbl, rng)); n != 0 {
			t.Errorf("%s: %d rows of the range left on the target", tbl, n)
		}
	}
	assertOthers(t, ctx, dst, testTables, rng)
	var progress int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM reshard.progress`).Scan(&progress); err != nil {
		t.Fatal(err)
	}
	if progress != 0 {
		t.Errorf("after Cancel: %d progress rows", progress)
	}
	if rec := j.get(t, "cancel-me"); rec.Phase != catalog.PhaseCancelled {
		t.Errorf("phase after Cancel = %q", rec.Phase)
	}
	if err := m2.Cancel(ctx); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}

	// The same id can be moved again after a cancel; once flipped, Cancel refuses.
	m3, _ := New(cfg, j)
	if err := m3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, m3, src)
	if err := m3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	rec := j.get(t, "cancel-me")
	rec.Phase = catalog.PhaseFlipped
	if err := j.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	m4, _ := New(cfg, j)
	if err := m4.Cancel(ctx); !errors.Is(err, ErrFlipped) {
		t.Fatalf("Cancel of a flipped migration: %v", err)
	}
	if err := m4.Start(ctx); !errors.Is(err, ErrFlipped) {
		t.Fatalf("Start of a flipped migration: %v", err)
	}
	assertSame(t, ctx, src, dst, []string{"ledger", "docs"}, rng)
	if err := m4.DropReplication(ctx); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("left on the source after DropReplication: %v", l)
	}
	srcAfter, err := demo.Fingerprint(ctx, src, testTables)
	if err != nil {
		t.Fatal(err)
	}
	if err := srcBefore.Diff("the source", srcAfter); err != nil {
		t.Errorf("two moves and a cancel changed the source: %v", err)
	}
}

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

// TestPartitionedTable moves a range of a partitioned table to a target partitioned
// differently: changes are published as the root's. A cancel then removes the copy from
// every partition of the target, and not one row of the other tenants there.
func TestPartitionedTable(t *testing.T) {
	ctx := context.Background()
	const parent = `CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, at date NOT NULL, payload text,
		PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at);`
	srcPG, dstPG, src, dst := pair(t, ctx, parent)
	mustExec(t, ctx, src, `CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
		CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
		INSERT INTO events SELECT t, i, date '2024-01-01' + (i % 59), 'e' || i FROM generate_series(1, 9) t, generate_series(1, 300) i`)
	mustExec(t, ctx, dst, `CREATE TABLE events_jan PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
		CREATE TABLE events_all PARTITION OF events DEFAULT`)
	rng := catalog.NewRange(3, 6)
	seedNeighbours(t, ctx, src, dst, []string{"events"}, rng)
	m, err := New(Config{ID: "parts", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: []string{"events"}, Range: rng, Logger: testLogger(t)}, newMemJournal())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx)
	for _, q := range []string{
		`INSERT INTO events VALUES (4, 1000, '2024-01-15', 'new p1'), (4, 1001, '2024-02-15', 'new p2'), (8, 1002, '2024-02-15', 'outside')`,
		`UPDATE events SET at = '2024-02-20' WHERE tenant_id = 3 AND id = 1`, // crosses partitions
		`UPDATE events SET payload = 'edited' WHERE tenant_id = 5 AND id < 10`,
		`UPDATE events SET tenant_id = 4, id = 5000 WHERE tenant_id = 7 AND id = 2`, // into the range
		`UPDATE events SET tenant_id = 8, id = 5001 WHERE tenant_id = 5 AND id = 3`, // out of it
		`DELETE FROM events WHERE tenant_id = 3 AND id BETWEEN 100 AND 110`,
	} {
		mustExec(t, ctx, src, q)
	}
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, []string{"events"}, rng)

	if err := m.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rangeRows(t, ctx, dst, "events", rng)); n != 0 {
		t.Errorf("%d rows of the range left on the target after Cancel", n)
	}
	assertOthers(t, ctx, dst, []string{"events"}, rng)
}
