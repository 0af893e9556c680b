package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
)

// finish is step 8: open the range on the target (again: idempotent), tombstone the fence
// on the source, drop slot and publication, delete the range's rows from the source
// (unless CleanupLater), and mark the migration done.
func (e *Executor) finish(ss *session) error {
	ctx, env, m := ss.ctx, ss.env, ss.m
	if e.Options.BeforeCleanup != nil {
		e.Options.BeforeCleanup()
	}
	start := time.Now()
	if err := env.MayWrite(); err != nil {
		return ss.interrupted(err)
	}
	if err := cutover.OpenRange(ctx, env.Target, m.ID, m.Range); err != nil {
		return fmt.Errorf("cleanup %s: target: %w", m.ID, err)
	}
	if err := cutover.MarkTombstone(ctx, env.Source, m.ID, m.Range, env.Token()); err != nil {
		return err
	}
	mv := ss.mv
	if mv == nil {
		var err error
		if mv, err = e.NewMover(m, ss.srcDSN, ss.dstDSN, sealedJournal(env.Catalog, m), env.Token()); err != nil {
			return err
		}
	}
	if err := mv.DropReplication(ctx); err != nil {
		return fmt.Errorf("cleanup %s: drop slot and publication: %w", m.ID, err)
	}
	if m.Phase != catalog.PhaseCleaningUp {
		m.Phase = catalog.PhaseCleaningUp
		if err := env.Catalog.PutMigration(ctx, m); err != nil {
			return ss.interrupted(err)
		}
	}
	if e.Options.CleanupLater {
		return nil
	}
	del := e.Options.Delete
	del.Check, del.Tombstone = env.MayWrite, m.ID
	if _, err := cutover.DeleteRange(ctx, env.Source, env.Keyspace(), env.Tables, m.Range, del); err != nil {
		return ss.interrupted(fmt.Errorf("cleanup %s: %w (re-run `reshard cleanup %s`)", m.ID, err, m.ID))
	}
	m.Timings.Cleanup = time.Since(start).Seconds()
	m.Phase = catalog.PhaseDone
	return ss.interrupted(env.Catalog.PutMigration(ctx, m))
}

// Cleanup deletes a flipped migration's rows from its old shard and marks it done;
// dropFence also removes the tombstone fence (and the guard trigger once no fence is
// left), for when no stale client can still write to the old shard.
func (e *Executor) Cleanup(ctx context.Context, id string, dropFence bool) (*catalog.Migration, error) {
	ss, err := e.open(ctx, id, nil)
	if err != nil {
		return ss.migration(), err
	}
	defer ss.close()
	m := ss.m
	if !m.Flipped() {
		return m, fmt.Errorf("migration %s is %s: only a flipped migration can be cleaned up (use reshard cancel for one that has not flipped)", id, m.Phase)
	}
	if m.Phase != catalog.PhaseDone {
		saved := e.Options.CleanupLater
		e.Options.CleanupLater = false
		err := e.finish(ss)
		e.Options.CleanupLater = saved
		if err != nil {
			return m, err
		}
	}
	if dropFence {
		if err := ss.env.MayWrite(); err != nil {
			return m, err
		}
		if err := cutover.DropFence(ss.ctx, ss.env.Source, m.ID, ss.env.Token()); err != nil {
			return m, err
		}
		kept, err := cutover.RemoveGuard(ss.ctx, ss.env.Source, ss.env.Tables, guardInUse(e.Catalog, m.Source, m.ID))
		if err != nil {
			return m, fmt.Errorf("shard %s: %w", m.Source, err)
		}
		if kept != "" {
			ss.env.Log.Warn("fence guard trigger kept", "shard", m.Source, "why", kept)
		}
	}
	return m, nil
}
