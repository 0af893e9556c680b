package migrate

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/cutover/cutovertest"
)

// TestRollbackEndsTheMigration: after a cutover undone for a mismatch (the copy kept),
// a rollback ends the migration: rolled_back with the cause, the copy removed once.
func TestRollbackEndsTheMigration(t *testing.T) {
	ctx := context.Background()
	f, m := setup(t)
	f.env.Mover = &copiedMover{}
	if _, err := f.env.Target.Exec(ctx, `DELETE FROM orders WHERE tenant_id = 15 AND id = (SELECT min(id) FROM orders WHERE tenant_id = 15)`); err != nil {
		t.Fatal(err)
	}
	_, err := cutover.Run(ctx, f.env, m, cutover.Options{})
	if !errors.Is(err, cutover.ErrMismatch) {
		t.Fatalf("Run = %v, want ErrMismatch", err)
	}
	mv := &copiedMover{}
	if err := Rollback(ctx, f.env, mv, m, err); err != nil {
		t.Fatal(err)
	}
	got, _ := f.store.GetMigration(ctx, "m1")
	if got.Phase != catalog.PhaseRolledBack || got.LastError == "" || mv.removed != 1 {
		t.Errorf("after rollback: %+v, mover %+v", got, mv)
	}
}

// TestRollbackRefusedAfterFlip: a migration that has flipped cannot be rolled back, not
// even by a driver holding its record from before the flip.
func TestRollbackRefusedAfterFlip(t *testing.T) {
	ctx := context.Background()
	f, m := setup(t)
	f.env.Mover = &copiedMover{}
	stale := *m
	if _, err := cutover.Run(ctx, f.env, m, cutover.Options{}); err != nil {
		t.Fatal(err)
	}
	mv := &copiedMover{}
	if err := Rollback(ctx, f.env, mv, &stale, nil); err == nil {
		t.Fatal("rollback of a flipped migration must fail")
	}
	if r, _ := mustLoad(t, f.store).Owner(15); r.Shard != "s2" || mv.removed != 0 {
		t.Errorf("owner = %+v, copy removed %d times", r, mv.removed)
	}
}

// TestRollbackTouchesNothingBeforeItsJournalWrite: a rollback whose journal write is
// refused leaves both shards as they were: the fence stays on the source and the target's
// copy is not removed (cutover's TestUndoTouchesNothingBeforeItsJournalWrite shows the
// same of an undo). Before the fix the fence and the copy went first.
func TestRollbackTouchesNothingBeforeItsJournalWrite(t *testing.T) {
	ctx := context.Background()
	f, m := setup(t)
	if err := cutover.SetFence(ctx, f.env.Source, m.ID, m.Range, f.env.Tables, 0); err != nil {
		t.Fatal(err)
	}
	env := f.env
	env.Catalog = cutovertest.WritesRefused{Store: f.store}
	mv := &copiedMover{}
	if err := Rollback(ctx, env, mv, m, errors.New("test")); !errors.Is(err, cutovertest.ErrRefused) {
		t.Fatalf("Rollback = %v, want the refused write", err)
	}
	if mv.removed != 0 {
		t.Errorf("the copy was removed %d times before the journal said so", mv.removed)
	}
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); !cutover.IsFenceError(err) {
		t.Errorf("write to the source after the refused rollback: %v, want the fence error (the fence must stay)", err)
	}
}

func mustLoad(t *testing.T, store *catalog.Store) *catalog.State {
	t.Helper()
	st, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
