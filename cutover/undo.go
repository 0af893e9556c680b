package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
)

// flipFailed decides what a failed flip means. If the journal says flipped, the flip did
// commit (its response was lost). If not, the cutover is undone, and the undo moves the
// journal by compare-and-swap before it drops the fence: should the flip still be in
// flight, exactly one of the two commits, and the fence goes only if the undo did. If etcd
// cannot say, or this driver lost its lock, everything stays as it is: the fence keeps the
// range safe until a re-run (or the driver that holds the lock now) decides.
func flipFailed(ctx context.Context, env Env, m *catalog.Migration, ferr error) error {
	rctx := context.WithoutCancel(ctx)
	cause := fmt.Errorf("cutover %s: flip: %w", m.ID, ferr)
	if errors.Is(ferr, catalog.ErrLockLost) {
		return fmt.Errorf("%w; the range stays fenced on %s for the driver that holds the lock now", cause, m.Source)
	}
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := env.Catalog.GetMigration(rctx, m.ID)
		if err == nil && cur.Flipped() {
			*m = *cur
			return nil
		}
		if err == nil {
			*m = *cur
			uerr := Undo(rctx, env, m)
			switch {
			case uerr == nil:
				return cause
			case errors.Is(uerr, catalog.ErrConflict):
				// The journal moved since it was read: the flip may have landed. Read again.
			default:
				return fmt.Errorf("%w; undoing the cutover failed too, the range stays fenced (re-run to finish or roll back): %v", cause, uerr)
			}
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	return fmt.Errorf("cutover %s: %w: %v; the range stays fenced on %s: re-run the migration to finish or roll back", m.ID, ErrAmbiguous, ferr, m.Source)
}

// Undo reverses steps 1-2 of a cutover that has not flipped: the range serves again from
// the source, with the migration back to catching up, and the fence is removed. The
// journal moves first, by compare-and-swap (and, in migrate.Executor, only while the
// driver holds the migration's lock); only then is the fence dropped. So a flip still in
// flight can never commit after the fence went, and a driver that lost its lock drops
// nothing. It is idempotent. It is the window's own undo: the copy stays, for another
// attempt; ending the whole migration is migrate.Rollback.
func Undo(ctx context.Context, env Env, m *catalog.Migration) error {
	cur, err := env.Catalog.GetMigration(ctx, m.ID)
	if err != nil {
		return err
	}
	*m = *cur
	switch {
	case m.Flipped():
		return fmt.Errorf("migration %s has flipped: its cutover cannot be undone", m.ID)
	case m.Phase == catalog.PhaseRollingBack || m.Terminal():
		return fmt.Errorf("migration %s is %s: its cutover cannot be undone, only its rollback finished", m.ID, m.Phase)
	}
	st, err := env.Catalog.LoadRange(ctx, m.Range.Lo, m.Source)
	if err != nil {
		return err
	}
	m.Phase = catalog.PhaseCatchingUp
	if err := UnfreezeOrPut(ctx, env, st, m); err != nil {
		return err
	}
	if err := env.MayWrite(); err != nil {
		return err
	}
	return DropFence(ctx, env.Source, m.ID, env.Token())
}

// UnfreezeOrPut writes m: with the range back to serving if m froze it, in one
// transaction; as a plain journal write otherwise. Undo and a migration's rollback move
// the journal with it, before they touch PostgreSQL.
func UnfreezeOrPut(ctx context.Context, env Env, st *catalog.State, m *catalog.Migration) error {
	if i := rangeOf(st, m.Range.Lo); i >= 0 && st.Ranges[i].State == catalog.RangeFrozen && st.Ranges[i].Migration == m.ID {
		return env.Catalog.Unfreeze(ctx, st, m.Range.Lo, m)
	}
	return env.Catalog.PutMigration(ctx, m)
}

func rangeOf(st *catalog.State, lo int64) int {
	for i, r := range st.Ranges {
		if r.Range.Lo == lo {
			return i
		}
	}
	return -1
}
