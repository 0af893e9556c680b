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
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 10, 5, 400, 30)
	rng := catalog.NewRange(3, 7)
	seedNeighbours(t, ctx, src, dst, testTables, rng)

	w := startWriter(ctx, src, 10, 3)
	defer func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
			w.wg.Wait()
		}
	}()
	time.Sleep(300 * time.Millisecond)

	j := newMemJournal()
	var progressCalls atomic.Int64
	m, err := New(Config{
		ID: "move-1", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(),
		Key: "tenant_id", Tables: testTables, Range: rng, Workers: 3,
		Progress: func(Progress) { progressCalls.Add(1) },
		Logger:   testLogger(t),
	}, j)
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
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, testTables, rng)

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
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 8, 5, 1500, 60)
	rng := catalog.From(4) // unbounded above
	seedNeighbours(t, ctx, src, dst, testTables, rng)
	j := newMemJournal()
	w := startWriter(ctx, src, 8, 2)
	defer func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
			w.wg.Wait()
		}
	}()

	cfg := Config{
		ID: "resume", SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(),
		Key: "tenant_id", Tables: testTables, Range: rng, Workers: 2,
		MaxRate: 256 << 10, // slow enough to be killed midway
		Logger:  testLogger(t),
	}

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
	waitCaughtUp(t, ctx, m3, src)
	if err := m3.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, testTables, rng)
	if err := m3.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("left on the source after Cancel: %v", l)
	}
	// The cancel removed the copy of the range, and only it.
	for _, tbl := range testTables {
		if n := len(rangeRows(t, ctx, dst, tbl, rng)); n != 0 {
			t.Errorf("%s: %d rows of the range left on the target after Cancel", tbl, n)
		}
	}
	assertOthers(t, ctx, dst, testTables, rng)
}
