package integration

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/migrate"
)

// TestCancelAndCleanupLater: a move stopped while catching up is cancelled (slot,
// publication, fence and the target's copy removed; the range serves from its source), and
// a move with cleanup "later" leaves its source rows fenced until `cleanup --drop-fence`.
func TestCancelAndCleanupLater(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 3)
	tenant, r, from, to := s.tenantMove(0)
	countOn := func(shard string) int64 {
		t.Helper()
		var n int64
		if err := s.conns[shard].QueryRow(ctx, `SELECT count(*) FROM ledger WHERE tenant_id = $1`, tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := countOn(from)

	// Stop the driver once the target is caught up, as a crash would.
	mctx, stop := context.WithCancel(ctx)
	ex := s.executor(migrate.ExecOptions{BeforeCutover: stop})
	if _, err := ex.Move(mctx, migrate.MoveRequest{ID: "to_cancel", Range: r, Target: to}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted move: %v", err)
	}
	if n := countOn(to); n != before {
		t.Fatalf("target holds %d of %d ledger rows before the cancel", n, before)
	}
	ex = s.executor(migrate.ExecOptions{})
	m, err := ex.Cancel(ctx, "to_cancel")
	if err != nil || m.Phase != catalog.PhaseCancelled {
		t.Fatalf("cancel: %v, %+v", err, m)
	}
	if n := countOn(to); n != 0 {
		t.Errorf("target keeps %d rows after the cancel", n)
	}
	if n := countOn(from); n != before {
		t.Errorf("source has %d rows, want %d", n, before)
	}
	if _, err := s.conns[from].Exec(ctx, `UPDATE tenants SET name = name WHERE tenant_id = $1`, tenant); err != nil {
		t.Errorf("write to the source after the cancel: %v", err)
	}

	// Cleanup later: the move flips, the source keeps its rows behind the fence.
	ex = s.executor(migrate.ExecOptions{CleanupLater: true})
	m, err = ex.Move(ctx, migrate.MoveRequest{ID: "later", Range: r, Target: to})
	if err != nil || m.Phase != catalog.PhaseCleaningUp {
		t.Fatalf("move with cleanup later: %v, %+v", err, m)
	}
	if n := countOn(from); n != before {
		t.Errorf("source has %d rows before cleanup, want %d", n, before)
	}
	if _, err := s.conns[from].Exec(ctx, `UPDATE tenants SET name = name WHERE tenant_id = $1`, tenant); !cutover.IsFenceError(err) {
		t.Errorf("stale write to the old shard: %v, want the fence error", err)
	}
	if m, err = ex.Cleanup(ctx, "later", true); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("cleanup: %v, %+v", err, m)
	}
	if n := countOn(from); n != 0 {
		t.Errorf("source keeps %d rows after cleanup", n)
	}
	var triggers int
	if err := s.conns[from].QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence'`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 {
		t.Errorf("%d fence triggers left after cleanup --drop-fence", triggers)
	}
	s.check(ctx, nil)
}
