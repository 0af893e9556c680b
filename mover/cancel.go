package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
)

// ErrStaleDriver is returned when the target's fence row of the migration carries another
// driver's token than the mover's: the driver lost its migration lock to a newer one.
var ErrStaleDriver = errors.New("the target's fence row of this migration belongs to a newer driver (this process lost its lock): stop")

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

// Remove stops the mover and removes what the move made: slot, publication (and the
// TRUNCATE triggers, once no other move uses the source), the progress row and, with
// targetRows, the range's rows on the target. It reads and writes no journal: the caller
// has journaled first, by compare-and-swap, that the migration will never flip (the
// target's rows are then nobody's). Idempotent.
func (m *Mover) Remove(ctx context.Context, targetRows bool) error {
	m.halt(ctx)
	if err := m.openPools(ctx); err != nil {
		return err
	}
	defer m.closePools()
	rec, err := m.j.Load(ctx, m.cfg.ID)
	if err != nil {
		return fmt.Errorf("mover: load migration %s: %w", m.cfg.ID, err)
	}
	src, dst := m.pools()
	if err := m.dropSlotAndPublication(ctx, src, rec); err != nil {
		return err
	}
	m.removeTruncateTriggersQuietly(ctx, src)
	if targetRows {
		if err := m.removeTargetRows(ctx, dst); err != nil {
			return err
		}
	}
	return deleteProgress(ctx, dst, m.cfg.ID)
}

// Cancel is Remove for a mover used on its own, with its journal as the authority: it
// refuses a migration that has flipped (the target's rows are then the only copy), keeps
// the target's rows of a migration that never got to copy (rows there are someone
// else's: preflight refused them), and ends the record in phase cancelled (a rolled_back
// one keeps its phase). It works from the journal alone (a migration whose process died)
// and is idempotent. The journal is read afresh: a cached record could miss a flip.
func (m *Mover) Cancel(ctx context.Context) error {
	rec, phase, err := m.loadRecord(ctx)
	if err != nil {
		return err
	}
	switch phase {
	case catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone:
		return fmt.Errorf("mover: cancel %s: %w; to move the range back, plan a move in the other direction", m.cfg.ID, ErrFlipped)
	case catalog.PhaseCancelled:
		m.halt(ctx)
		return nil
	}
	copied := phase != "" && phase != catalog.PhasePlanned && phase != catalog.PhasePreflight
	if err := m.Remove(ctx, copied); err != nil {
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

// names are the slot and publication of the migration, as its record has them.
func (m *Mover) names(rec *catalog.Migration) (slot, pub string) {
	slot, pub = m.slot, m.pub
	if rec != nil && rec.Slot != "" {
		slot = rec.Slot
	}
	if rec != nil && rec.Publication != "" {
		pub = rec.Publication
	}
	return slot, pub
}

// dropSlotAndPublication drops the migration's slot and publication on the source.
func (m *Mover) dropSlotAndPublication(ctx context.Context, src *pgxpool.Pool, rec *catalog.Migration) error {
	slot, pub := m.names(rec)
	if err := dropSlot(ctx, src, slot); err != nil {
		return err
	}
	return dropPublication(ctx, src, pub)
}

// removeCopy undoes an interrupted copy: slot, publication, copied rows, progress row.
func (m *Mover) removeCopy(ctx context.Context, rec *catalog.Migration) error {
	src, dst := m.pools()
	if err := m.dropSlotAndPublication(ctx, src, rec); err != nil {
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
	d := rangeDeleter{pool: dst, pred: m.cfg.pred, migration: m.cfg.ID, token: m.cfg.Token, log: m.log}
	return d.run(ctx, tables)
}

// rangeDeleter deletes the rows matching pred from tables, in batches so that no statement
// holds many row locks or runs long. With a token, each batch is a transaction that first
// takes a share lock on the target's fence row of the migration and checks that it
// carries the token: a driver that lost its lock deletes nothing once a newer one has
// written its token there, and a batch in flight holds the newer driver's write back
// until it commits.
type rangeDeleter struct {
	pool      txExecer
	pred      func(*table) string
	migration string
	token     int64
	log       *slog.Logger
}

// txExecer is a pool or one connection.
type txExecer interface {
	execer
	Begin(ctx context.Context) (pgx.Tx, error)
}

const batchRows = 10000

// tokenCheckSQL share-locks the migration's fence row on the target, as the first
// statement of a transaction that writes the range there, and returns one row if it
// carries the driver's token ($2). The lock holds back a newer driver's write of its own
// token (and the lift of the fence at the flip) until the transaction ends.
const tokenCheckSQL = `SELECT 1 FROM reshard.fence WHERE migration = $1 AND NOT tombstone AND token = $2 FOR SHARE`

func (d rangeDeleter) run(ctx context.Context, tables []*table) error {
	for _, t := range tables {
		// (tableoid, ctid): a ctid is unique within one partition only.
		sql := fmt.Sprintf(`DELETE FROM %[1]s WHERE %[2]s AND (tableoid, ctid) IN
			(SELECT tableoid, ctid FROM %[1]s WHERE %[2]s LIMIT %[3]d)`, t.Qualified(), d.pred(t), batchRows)
		var total int64
		for {
			n, err := d.batch(ctx, sql)
			if err != nil {
				return fmt.Errorf("target: delete the range's rows from %s: %w", t.Name, err)
			}
			total += n
			if n == 0 {
				break
			}
		}
		if total > 0 {
			d.log.Info("deleted the range's rows from the target", "table", t.Name, "rows", total)
		}
	}
	return nil
}

func (d rangeDeleter) batch(ctx context.Context, sql string) (int64, error) {
	if d.token == 0 {
		tag, err := d.pool.Exec(ctx, sql)
		return tag.RowsAffected(), err
	}
	var n int64
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if err := checkToken(ctx, tx, d.migration, d.token); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, sql)
		n = tag.RowsAffected()
		return err
	})
	return n, err
}

// checkToken runs tokenCheckSQL in tx: ErrStaleDriver if the row or the token is not there.
func checkToken(ctx context.Context, tx interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, migration string, token int64) error {
	tag, err := tx.Exec(ctx, tokenCheckSQL, migration, token)
	if err != nil {
		return fmt.Errorf("read the fence row of %s: %w", migration, err)
	}
	if tag.RowsAffected() != 1 {
		return ErrStaleDriver
	}
	return nil
}
