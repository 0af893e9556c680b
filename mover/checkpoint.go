package mover

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

// update loads the migration record, lets f change the mover's fields and saves it. Each
// write starts from a fresh Load so that fields others own (the cutover's) are kept.
func (m *Mover) update(ctx context.Context, f func(*catalog.Migration)) error {
	// One at a time: copy workers record their chunks while the copy's checkpoints run,
	// and two interleaved load-and-save rounds would lose one's change.
	m.journalMu.Lock()
	defer m.journalMu.Unlock()
	rec, err := m.j.Load(ctx, m.cfg.ID)
	if err != nil {
		return fmt.Errorf("mover: load migration %s: %w", m.cfg.ID, err)
	}
	now := time.Now().UTC()
	if rec == nil {
		rec = &catalog.Migration{ID: m.cfg.ID, Kind: catalog.KindMove, Range: m.cfg.Range, Phase: catalog.PhasePlanned, Created: now}
	}
	f(rec)
	rec.Updated = now
	if err := m.j.Save(ctx, rec); err != nil {
		return fmt.Errorf("mover: save migration %s: %w", m.cfg.ID, err)
	}
	return nil
}

// checkpoint records the catch-up's position and lag (and the copy's counters while it
// runs). withLag also measures the lag on the source.
func (m *Mover) checkpoint(ctx context.Context, withLag bool) error {
	var lagB int64
	var lagS float64
	if withLag {
		var err error
		if lagB, lagS, err = m.Lag(ctx); err != nil {
			return err
		}
	}
	applied := m.AppliedLSN()
	m.mu.Lock()
	from := m.catchupFrom
	m.mu.Unlock()
	var lastErr string
	if p := m.lastErr.Load(); p != nil {
		lastErr = *p
	}
	return m.update(ctx, func(r *catalog.Migration) {
		if applied != 0 {
			r.AppliedLSN = applied.String()
		}
		if withLag {
			r.LagBytes, r.LagSeconds = lagB, lagS
		}
		if lastErr != "" {
			r.LastError = lastErr
		}
		if r.Phase == catalog.PhaseCatchingUp && !from.IsZero() && withLag && lagB <= caughtUpBytes && r.Timings.Catchup == 0 {
			// First time caught up: the catch-up timing (docs/catalog.md, "Migration timings").
			r.Timings.Catchup = time.Since(from).Seconds()
		}
	})
}

// caughtUpBytes is the lag under which the catch-up counts as caught up for its timing
// (other tenants keep writing on a busy source, so exact zero may never be seen).
const caughtUpBytes = 64 << 10

// recordCopyDone journals a finished copy, first or resumed, in one save: the catch-up
// starts from consistent, with the copy's counters and its time since began, so a restart
// after it resumes the catch-up and never copies again.
func (m *Mover) recordCopyDone(ctx context.Context, consistent pglogrepl.LSN, st *copyStats, began time.Time) error {
	return m.update(ctx, func(r *catalog.Migration) {
		r.Phase = catalog.PhaseCatchingUp
		r.AppliedLSN = consistent.String()
		st.record(r)
		r.Timings.Copy = time.Since(began).Seconds()
	})
}

// loadRecord reads the migration's record afresh from the journal, and its phase ("" when
// there is no record yet).
func (m *Mover) loadRecord(ctx context.Context) (*catalog.Migration, string, error) {
	rec, err := m.j.Load(ctx, m.cfg.ID)
	if err != nil {
		return nil, "", fmt.Errorf("mover: load migration %s: %w", m.cfg.ID, err)
	}
	if rec == nil {
		return nil, "", nil
	}
	return rec, rec.Phase, nil
}
