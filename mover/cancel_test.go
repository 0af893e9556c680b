package mover

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// TestCancelAndCleanup: after Cancel no reshard_ slot or publication is left and the
// target holds none of the range; Cancel works for a dead process from the journal alone,
// is idempotent, and refuses a migration that has flipped.
func TestCancelAndCleanup(t *testing.T) {
	ctx := context.Background()
	rng := catalog.NewRange(2, 5)
	// Rows outside the range on the target are not the mover's and must survive.
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 6, 5, 200, 10)
	j := newMemJournal()
	cfg := moveConfig(t, "cancel-me", srcPG, dstPG, testTables, rng)

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
	assertCancelled(t, ctx, src, dst, testTables, rng)
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
