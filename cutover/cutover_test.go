package cutover

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/reshard/reshard/catalog"
)

func TestRunFlips(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	rep := &copiedReplicator{}
	f.env.Mover = rep
	m := newMigration(t, f)
	res, err := Run(ctx, f.env, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 310 || res.FenceLSN == 0 || res.Window <= 0 || rep.stopped != 1 {
		t.Errorf("result = %+v, replicator %+v", res, rep)
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := st.Owner(15)
	if r.Shard != "s2" || r.State != catalog.RangeServing || r.Epoch != 2 {
		t.Errorf("after flip, owner of 15 = %+v; want s2, serving, epoch 2", r)
	}
	got, _ := f.store.GetMigration(ctx, "m1")
	if got.Phase != catalog.PhaseFlipped || got.Timings.CutoverWindow <= 0 || got.FenceLSN == "" {
		t.Errorf("journal = %+v", got)
	}
	// The fence stays: a stale write to the old shard fails loudly.
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); !IsFenceError(err) {
		t.Errorf("stale write after flip: %v, want fence error", err)
	}
}

func TestRunUndoesOnMismatch(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	if _, err := f.env.Target.Exec(ctx, `DELETE FROM orders WHERE tenant_id = 15 AND id = (SELECT min(id) FROM orders WHERE tenant_id = 15)`); err != nil {
		t.Fatal(err)
	}
	m := newMigration(t, f)
	_, err := Run(ctx, f.env, m, Options{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("Run = %v, want ErrMismatch", err)
	}
	st, _ := f.store.Load(ctx)
	r, _ := st.Owner(15)
	if r.Shard != "s1" || r.State != catalog.RangeServing || r.Epoch != 1 {
		t.Errorf("after a failed cutover, owner of 15 = %+v; want s1 serving epoch 1", r)
	}
	if m.Phase != catalog.PhaseCatchingUp {
		t.Errorf("phase = %s, want catching_up (cutover undone, copy kept)", m.Phase)
	}
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); err != nil {
		t.Errorf("write after undo: %v", err)
	}
}

// TestFlipRefusedTwice: once flipped, a second driver's cutover of the same migration is
// refused by the catalog (migrate's TestRollbackRefusedAfterFlip: so is its rollback).
func TestFlipRefusedTwice(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	stale := *m
	if _, err := Run(ctx, f.env, m, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, f.env, &stale, Options{}); err == nil {
		t.Fatal("a second cutover of a flipped migration must fail")
	}
	st, _ := f.store.Load(ctx)
	if err := catalog.ValidateState(st); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Owner(15); r.Shard != "s2" || r.Epoch != 2 {
		t.Errorf("owner = %+v", r)
	}
}

// TestRunUndoneWhenGuardMissing: a cutover whose source lost its guard trigger on a table
// (removed by hand, or by a cleanup that raced the migration) fails right after setting
// the fence and is undone: the range serves from the source again, no fence is left.
func TestRunUndoneWhenGuardMissing(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	if _, err := f.env.Source.Exec(ctx, `DROP TRIGGER reshard_fence ON orders`); err != nil {
		t.Fatal(err)
	}
	m := newMigration(t, f)
	if _, err := Run(ctx, f.env, m, Options{}); !errors.Is(err, ErrGuardMissing) {
		t.Fatalf("Run = %v, want ErrGuardMissing", err)
	}
	st, _ := f.store.Load(ctx)
	if r, _ := st.Owner(15); r.Shard != "s1" || r.State != catalog.RangeServing {
		t.Errorf("after the failed cutover, owner of 15 = %+v; want s1 serving", r)
	}
	var fences int
	if err := f.env.Source.QueryRow(ctx, `SELECT count(*) FROM reshard.fence`).Scan(&fences); err != nil || fences != 0 {
		t.Errorf("fences left: %d, %v", fences, err)
	}
}

// TestRunJournalsWindowSteps: the cutover's steps are kept in the journal, in order, by the
// names docs/catalog.md gives them: the flip's own write carries the steps before it, and
// the migration Run hands back (which the executor journals next) all of them through open.
func TestRunJournalsWindowSteps(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	if _, err := Run(ctx, f.env, m, Options{}); err != nil {
		t.Fatal(err)
	}
	names := func(steps []catalog.WindowStep) []string {
		var out []string
		for _, s := range steps {
			if s.Seconds < 0 {
				t.Errorf("step %s took %v s", s.Step, s.Seconds)
			}
			out = append(out, s.Step)
		}
		return out
	}
	atFlip := []string{"freeze", "fence", "drain", "catch-up", "verify", "sequences"}
	got, err := f.store.GetMigration(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := names(got.Timings.Window); !slices.Equal(n, atFlip) {
		t.Errorf("journal at the flip: window steps %v, want %v", n, atFlip)
	}
	if n := names(m.Timings.Window); !slices.Equal(n, append(atFlip, "flip", "open")) {
		t.Errorf("after Run: window steps %v, want %v", n, append(atFlip, "flip", "open"))
	}
}
