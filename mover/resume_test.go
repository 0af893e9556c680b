package mover

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestResumedCopyCopiesOnlyUnfinishedChunks kills the mover (cancels its context) once half
// of its copy's chunks are done, while a writer inserts, updates, moves keys and deletes in
// the range; more writes land while no mover runs (rows the resumed copy's snapshot holds
// and whose inserts, updates and deletes the catch-up then replays). A new mover with the
// same id copies only the unfinished chunks, from a new snapshot, catches up from the
// slot's original consistent point, and the range ends identical row by row.
func TestResumedCopyCopiesOnlyUnfinishedChunks(t *testing.T) {
	smallChunks(t) // 4 of 10 tenants: key chunks
	ctx := context.Background()
	rng := catalog.NewRange(3, 7)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 10, 5, 1500, 60)
	w := startWriter(ctx, src, 10, 2)
	defer w.close()

	j := newMemJournal()
	killCtx, kill := context.WithCancel(ctx)
	var once sync.Once
	j.onSave = func(r *catalog.Migration) {
		if done, total := chunksDone(r.Copy); total > 0 && 2*done >= total {
			once.Do(kill)
		}
	}
	cfg := moveConfig(t, "resume_copy", srcPG, dstPG, testTables, rng)
	cfg.Workers = 1
	m1, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m1.Start(killCtx); err == nil {
		t.Fatal("Start finished although it was killed during the copy")
	}
	j.onSave = nil
	rec := j.get(t, cfg.ID)
	done, total := chunksDone(rec.Copy)
	if rec.Phase != catalog.PhaseCopying || done == 0 || done == total {
		t.Fatalf("after the kill: phase %s, %d of %d chunks done", rec.Phase, done, total)
	}
	t.Logf("killed with %d of %d chunks done", done, total)

	// While no mover runs: an insert, an update and a delete in the last tenant of the
	// range (copied last, so by the resumed run) and in the first.
	for _, sql := range []string{
		`INSERT INTO accounts (tenant_id, id, name) VALUES (6, 1000, 'in the gap'), (3, 1000, 'in the gap')`,
		`UPDATE docs SET title = 'gap' WHERE tenant_id IN (3, 6)`,
		`DELETE FROM ledger WHERE tenant_id IN (3, 6) AND id % 10 = 0`,
	} {
		mustExec(t, ctx, src, sql)
	}
	time.Sleep(300 * time.Millisecond)

	m2 := startMover(t, ctx, cfg, j)
	defer m2.Stop(ctx)
	rec = j.get(t, cfg.ID)
	consistent, _ := pglogrepl.ParseLSN(rec.ConsistentLSN)
	if rec.Copy.Runs != 2 || overlapOf(rec) <= consistent {
		t.Errorf("journal after the resumed copy: runs %d, overlap %q, consistent %s", rec.Copy.Runs, rec.Copy.OverlapLSN, rec.ConsistentLSN)
	}
	var again, all int64
	recopied := 0
	for _, tb := range rec.Copy.Tables {
		for _, c := range tb.Chunks {
			if !c.Done {
				t.Errorf("%s: a chunk is not done after the resumed copy: %+v", tb.Table, c)
			}
			all += c.Rows
			if c.Run == 2 {
				again += c.Rows
				recopied++
			}
		}
	}
	if recopied != total-done {
		t.Errorf("the resumed copy copied %d chunks, want the %d unfinished ones", recopied, total-done)
	}
	if all == 0 || float64(again) >= 0.6*float64(all) {
		t.Errorf("the resumed copy copied %d of %d rows, want under 60%%", again, all)
	}
	t.Logf("the resumed copy copied %d of %d rows (%d of %d chunks)", again, all, recopied, total)

	time.Sleep(time.Second)
	w.halt(t)
	caughtUpAndSame(t, ctx, m2, src, dst, rng)
}

// chunksDone counts the done chunks of a copy plan, and all of them.
func chunksDone(p *catalog.CopyPlan) (done, total int) {
	if p == nil {
		return 0, 0
	}
	for _, tb := range p.Tables {
		for _, c := range tb.Chunks {
			total++
			if c.Done {
				done++
			}
		}
	}
	return done, total
}

// TestTargetRestartDuringCopyAndCatchup restarts the target PostgreSQL while the copy runs
// (after its first chunk) and again while the catch-up runs, under a writer: the copy
// resumes by itself with its unfinished chunks, the catch-up reconnects, and the range ends
// identical row by row.
func TestTargetRestartDuringCopyAndCatchup(t *testing.T) {
	smallChunks(t)
	ctx := context.Background()
	rng := catalog.NewRange(3, 7)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 10, 5, 1500, 60)
	w := startWriter(ctx, src, 10, 2)
	defer w.close()

	restarted := make(chan error, 1)
	var once sync.Once
	j := newMemJournal()
	cfg := moveConfig(t, "dst_restart", srcPG, dstPG, testTables, rng)
	cfg.Workers, cfg.MaxRate = 1, 512<<10
	cfg.Progress = func(p Progress) {
		if p.Phase == catalog.PhaseCopying && p.ChunksDone > 0 && p.ChunksDone < p.ChunksTotal {
			once.Do(func() { go func() { restarted <- dstPG.Restart(ctx) }() })
		}
	}
	m := startMover(t, ctx, cfg, j)
	defer m.Stop(ctx)
	testenv.WaitErr(t, restarted, 2*time.Minute, "the target was never restarted during the copy")
	rec := j.get(t, cfg.ID)
	if rec.Copy.Runs < 2 {
		t.Errorf("the copy ran %d times, want it resumed after the restart", rec.Copy.Runs)
	}
	time.Sleep(time.Second)
	if err := dstPG.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	w.halt(t)
	caughtUpAndSame(t, ctx, m, src, dst, rng)
}
