package mover

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestMoveUnderConcurrentWrites copies and catches up a range while a writer keeps
// inserting, updating (including updates that move rows across the range boundary, change
// the key, and leave TOASTed values unchanged) and deleting in tenants on both sides of the
// boundary; at a quiescent point the range is identical row by row on both sides.
func TestMoveUnderConcurrentWrites(t *testing.T) {
	smallChunks(t) // 4 of 10 tenants: key chunks
	ctx := context.Background()
	rng := catalog.NewRange(3, 7)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 10, 5, 400, 30)

	w := startWriter(ctx, src, 10, 3)
	defer w.close()
	time.Sleep(300 * time.Millisecond)

	j := newMemJournal()
	var progressCalls atomic.Int64
	cfg := moveConfig(t, "move-1", srcPG, dstPG, testTables, rng)
	cfg.Workers = 3
	cfg.Progress = func(Progress) { progressCalls.Add(1) }
	m, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := j.get(t, "move-1")
	if rec.Phase != catalog.PhaseCatchingUp || rec.ConsistentLSN == "" || rec.RowsCopied == 0 || rec.Slot != "reshard_move_1" {
		t.Fatalf("journal after Start: %+v", rec)
	}
	t.Logf("copied %d rows, %d bytes in %.2fs", rec.RowsCopied, rec.BytesCopied, rec.Timings.Copy)

	// Let the catch-up run under writes, then stop writing and wait for zero lag.
	time.Sleep(3 * time.Second)
	w.halt(t)
	if w.moves.Load() == 0 {
		t.Fatal("the writer moved no document across tenants; the test proves less than it claims")
	}
	caughtUpAndSame(t, ctx, m, src, dst, rng)

	// An idle source reaches lag zero through keepalives.
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, s, err := m.Lag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b == 0 {
			t.Logf("lag 0 bytes, %.3fs", s)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag stuck at %d bytes on an idle source", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if progressCalls.Load() == 0 {
		t.Error("the progress callback was never called")
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := j.get(t, "move-1"); rec.AppliedLSN == "" || rec.AppliedLSN == rec.ConsistentLSN {
		t.Errorf("applied LSN not checkpointed: %+v", rec)
	}
	if err := m.DropReplication(ctx); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("left on the source after DropReplication: %v", l)
	}
	// The copy stays on the target after the replication is dropped.
	assertSame(t, ctx, src, dst, testTables, rng)
}

// TestResumeAfterKill kills the mover (cancels its context) during the copy and during the
// catch-up, while a writer runs; a new mover with the same id finishes with identical data.
func TestResumeAfterKill(t *testing.T) {
	smallChunks(t) // 5 of 8 tenants: block chunks
	ctx := context.Background()
	rng := catalog.From(4) // unbounded above
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 8, 5, 1500, 60)
	j := newMemJournal()
	w := startWriter(ctx, src, 8, 2)
	defer w.close()

	cfg := moveConfig(t, "resume", srcPG, dstPG, testTables, rng)
	cfg.Workers = 2
	cfg.MaxRate = 256 << 10 // slow enough to be killed midway

	// 1. Killed during the copy, once some chunk has landed, or at the latest once bytes
	// flow: on a loaded machine the last chunks may all end between two progress reports.
	killCtx, kill := context.WithCancel(ctx)
	cfg1 := cfg
	cfg1.Progress = func(p Progress) {
		if p.Phase == catalog.PhaseCopying && (p.ChunksDone > 0 || p.BytesCopied > 0) && p.ChunksDone < p.ChunksTotal {
			kill()
		}
	}
	m1, err := New(cfg1, j)
	if err != nil {
		t.Fatal(err)
	}
	err = m1.Start(killCtx)
	if err == nil {
		t.Fatal("Start finished although it was killed during the copy")
	}
	kill()
	if rec := j.get(t, "resume"); rec.Phase != catalog.PhaseCopying {
		t.Fatalf("after a kill during the copy the journal says %q", rec.Phase)
	}
	var partial int
	if err := dst.QueryRow(ctx, "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM ledger) + (SELECT count(*) FROM docs)").Scan(&partial); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed during the copy (err: %v) with %d rows on the target", err, partial)

	// 2. Restarted: the copy starts over, then catch-up; killed during catch-up.
	cfg.MaxRate = 0
	killCtx, kill = context.WithCancel(ctx)
	m2, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(killCtx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	before := m2.AppliedLSN()
	kill()
	time.Sleep(500 * time.Millisecond) // writes keep coming while no mover runs
	t.Logf("killed during catch-up at applied %s", before)

	// 3. Restarted again: resumes from reshard.progress.
	m3, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	// And the source restarts under it: the catch-up reconnects.
	if err := srcPG.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	w.halt(t)
	caughtUpAndSame(t, ctx, m3, src, dst, rng)
	if err := m3.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// The cancel removed the copy of the range, and only it.
	assertCancelled(t, ctx, src, dst, testTables, rng)
}

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
	m := startMover(t, ctx, moveConfig(t, "types", srcPG, dstPG, []string{"kinds", "tagged"}, rng), j)
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
