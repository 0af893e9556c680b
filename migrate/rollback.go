package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
)

// Rollback ends a migration that has not flipped, rolled back: the range serves from its
// source, the fences go, and mv (unless nil) removes the copy (slot, publication, the
// target's rows). It is idempotent and refuses a migration that has flipped. A cutover's
// own undo, which keeps the copy for another attempt, is cutover.Undo.
func Rollback(ctx context.Context, env cutover.Env, mv Remover, m *catalog.Migration, cause error) error {
	return rollback(ctx, env, mv, m, cause, catalog.PhaseRolledBack)
}

// rollback ends the migration in phase (rolled_back, or cancelled by the operator), in
// three steps:
//
//  1. The journal goes to rolling_back (and the range back to serving if the migration
//     froze it) in one compare-and-swap. From then on no driver can freeze or flip it,
//     so nothing on either shard is still needed; before it, nothing is touched. A
//     journal already rolling_back (an earlier rollback that stopped) skips this step.
//  2. PostgreSQL: this driver's token goes into the target's fence row; the source's
//     fence goes; slot, publication and the target's copy go (deleted only while the
//     target's fence row carries this driver's token); then the target's fence goes.
//  3. The journal takes its final phase.
func rollback(ctx context.Context, env cutover.Env, mv Remover, m *catalog.Migration, cause error, phase string) error {
	cur, err := env.Catalog.GetMigration(ctx, m.ID)
	if err != nil {
		return err
	}
	*m = *cur
	switch {
	case m.Flipped():
		return fmt.Errorf("migration %s has flipped: it cannot be rolled back (finish it with `reshard cleanup %s`)", m.ID, m.ID)
	case m.Terminal():
		return nil
	}
	if err := beginRollback(ctx, env, m, cause, phase); err != nil {
		return err
	}
	if err := env.MayWrite(); err != nil {
		return err
	}
	// The target's copy is deleted only under this driver's token: write it there first
	// (a driver that lost its lock to this one deletes nothing from then on).
	if err := cutover.ClaimFence(ctx, env.Target, m.ID, m.Range, env.Token()); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := cutover.DropFence(ctx, env.Source, m.ID, env.Token()); err != nil {
		return err
	}
	if mv != nil {
		if err := mv.Remove(ctx, !m.KeepTarget); err != nil {
			return fmt.Errorf("remove the copy: %w", err)
		}
	}
	if err := env.MayWrite(); err != nil {
		return err
	}
	if err := cutover.DropFence(ctx, env.Target, m.ID, env.Token()); err != nil {
		return err
	}
	m.Phase = m.RollbackTo
	if err := env.Catalog.PutMigration(ctx, m); err != nil {
		return err
	}
	// Last, once the migration has ended: its shards' guards, unless still needed there.
	releaseGuards(ctx, env, m)
	return nil
}

// beginRollback is step 1 of rollback.
func beginRollback(ctx context.Context, env cutover.Env, m *catalog.Migration, cause error, phase string) error {
	if m.Phase == catalog.PhaseRollingBack {
		if phase == catalog.PhaseCancelled && m.RollbackTo != phase {
			m.RollbackTo = phase // the operator's cancel names the outcome
			return env.Catalog.PutMigration(ctx, m)
		}
		return nil
	}
	st, err := env.Catalog.Load(ctx)
	if err != nil {
		return err
	}
	// A migration that never got to copy wrote nothing on the target: rows of the range
	// there are someone else's (preflight refused them).
	m.KeepTarget = m.Phase == catalog.PhasePlanned || m.Phase == catalog.PhasePreflight
	m.Phase, m.RollbackTo = catalog.PhaseRollingBack, phase
	if cause != nil {
		m.LastError = cause.Error()
	}
	return cutover.UnfreezeOrPut(ctx, env, st, m)
}

// Cancel rolls back a migration that has not flipped: slot, publication, fence and the
// target's copy are removed and the range serves from its source.
func (e *Executor) Cancel(ctx context.Context, id string) (*catalog.Migration, error) {
	ss, err := e.open(ctx, id, nil)
	if err != nil {
		return ss.migration(), err
	}
	defer ss.close()
	m := ss.m
	if m.Terminal() {
		return m, nil
	}
	mv, err := e.NewMover(m, ss.srcDSN, ss.dstDSN, sealedJournal(ss.env.Catalog, m), ss.env.Token())
	if err != nil {
		return m, err
	}
	return m, ss.interrupted(rollback(ss.ctx, ss.env, mv, m, errors.New("cancelled by the operator"), catalog.PhaseCancelled))
}
