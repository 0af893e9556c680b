package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
)

// DropReplication stops the catch-up and drops the slot and the publication (and the
// TRUNCATE triggers, once no other move uses the source), and the migration's
// reshard.progress row on the target; the copied rows stay. The cutover calls
// it once the target owns the range.
func (m *Mover) DropReplication(ctx context.Context) error {
	m.halt(ctx)
	if err := m.openPools(ctx); err != nil {
		return err
	}
	defer m.closePools()
	src, dst := m.pools()
	err := errors.Join(
		dropSlot(ctx, src, m.slot),
		dropPublication(ctx, src, m.pub),
		deleteProgress(ctx, dst, m.cfg.ID),
	)
	if err == nil {
		m.removeTruncateTriggersQuietly(ctx, src)
	}
	return err
}

// Cancel stops the mover, drops the slot and the publication (and the TRUNCATE triggers,
// once no other move uses the source), and deletes the range's rows
// from the target. It works from the journal alone (a migration whose process died), is
// idempotent, and refuses a migration that has flipped: the target's rows are then the
// only copy. The record ends in phase cancelled (a rolled_back one keeps its phase).
func (m *Mover) Cancel(ctx context.Context) error {
	rec, err := m.j.Load(ctx, m.cfg.ID)
	if err != nil {
		return fmt.Errorf("mover: load migration %s: %w", m.cfg.ID, err)
	}
	phase := ""
	if rec != nil {
		phase = rec.Phase
	}
	switch phase {
	case catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone:
		return fmt.Errorf("mover: cancel %s: %w; to move the range back, plan a move in the other direction", m.cfg.ID, ErrFlipped)
	case catalog.PhaseCancelled:
		m.halt(ctx)
		return nil
	}
	m.halt(ctx)
	if err := m.openPools(ctx); err != nil {
		return err
	}
	defer m.closePools()
	src, dst := m.pools()
	slot, pub := m.slot, m.pub
	if rec != nil && rec.Slot != "" {
		slot = rec.Slot
	}
	if rec != nil && rec.Publication != "" {
		pub = rec.Publication
	}
	if err := dropSlot(ctx, src, slot); err != nil {
		return err
	}
	if err := dropPublication(ctx, src, pub); err != nil {
		return err
	}
	m.removeTruncateTriggersQuietly(ctx, src)
	// Only a migration that got as far as copying wrote rows on the target; before that,
	// rows of the range there are someone else's (preflight refused them).
	switch phase {
	case "", catalog.PhasePlanned, catalog.PhasePreflight:
	default:
		if err := m.removeTargetRows(ctx, dst); err != nil {
			return err
		}
	}
	if err := deleteProgress(ctx, dst, m.cfg.ID); err != nil {
		return err
	}
	if rec == nil {
		return nil
	}
	return m.update(ctx, func(r *catalog.Migration) {
		if r.Phase != catalog.PhaseRolledBack {
			r.Phase = catalog.PhaseCancelled
		}
		r.LastError = ""
	})
}

// removeCopy undoes an interrupted copy: slot, publication, copied rows, progress row.
func (m *Mover) removeCopy(ctx context.Context, rec *catalog.Migration) error {
	src, dst := m.pools()
	slot, pub := m.slot, m.pub
	if rec.Slot != "" {
		slot = rec.Slot
	}
	if rec.Publication != "" {
		pub = rec.Publication
	}
	if err := dropSlot(ctx, src, slot); err != nil {
		return err
	}
	if err := dropPublication(ctx, src, pub); err != nil {
		return err
	}
	if err := m.removeTargetRows(ctx, dst); err != nil {
		return err
	}
	return deleteProgress(ctx, dst, m.cfg.ID)
}

// removeTargetRows deletes the range's rows from the target tables, children first.
func (m *Mover) removeTargetRows(ctx context.Context, dst *pgxpool.Pool) error {
	var tables []*table
	for i := len(m.cfg.Tables) - 1; i >= 0; i-- {
		t, err := loadTable(ctx, dst, m.cfg.Tables[i])
		if errors.Is(err, errNoTable) {
			continue
		}
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		tables = append(tables, t)
	}
	return deleteRange(ctx, dst, tables, m.cfg.Range.SQL(ident(m.cfg.Key)), m.log)
}

// deleteRange deletes the rows matching pred from each table, in batches so that no
// statement holds many row locks or runs long.
func deleteRange(ctx context.Context, db execer, tables []*table, pred string, log *slog.Logger) error {
	for _, t := range tables {
		var total int64
		for {
			tag, err := db.Exec(ctx, fmt.Sprintf(`DELETE FROM %[1]s WHERE %[2]s AND (tableoid, ctid) IN
				(SELECT tableoid, ctid FROM %[1]s WHERE %[2]s LIMIT 10000)`, t.Qualified(), pred))
			if err != nil {
				return fmt.Errorf("target: delete the range's rows from %s: %w", t.Name, err)
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() == 0 {
				break
			}
		}
		if total > 0 {
			log.Info("deleted the range's rows from the target", "table", t.Name, "rows", total)
		}
	}
	return nil
}
