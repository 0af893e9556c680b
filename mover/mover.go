package mover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/clock"
)

const closeTimeout = 5 * time.Second

// Mover moves one key range: Start copies it and launches the catch-up, which keeps the
// target applied until Stop, DropReplication or Cancel. Its methods are safe for
// concurrent use.
type Mover struct {
	cfg       Config
	j         Journal
	log       *slog.Logger
	slot, pub string
	th        *throttle

	mu        sync.Mutex
	started   bool
	cancel    context.CancelFunc // ends the run started by Start
	done      chan struct{}      // closed when the catch-up goroutine has returned
	startDone chan struct{}      // closed when Start has returned
	running   bool               // catch-up is running
	fatal     error
	srcPool   *pgxpool.Pool // control connection to the source (1 connection)
	dstPool   *pgxpool.Pool // and to the target
	notify    chan struct{} // closed and replaced whenever the applied position moves
	copyStat  *copyStats
	hold      *applyHold // the apply stops at its position (HoldApply)
	changes   *changeSet // the rows applied since the last hold's position

	applied     atomic.Uint64 // pglogrepl.LSN durably applied on the target
	appliedAt   atomic.Int64  // source time (unix ns) of the applied position
	appliedTxs  atomic.Int64
	waiters     atomic.Int32           // goroutines in WaitApplied
	lastErr     atomic.Pointer[string] // last transient catch-up error, for the journal
	rate        applyRate
	catchupFrom time.Time
	journalMu   sync.Mutex // serialises update
	// overlap: source transactions committed before it are applied idempotently (a
	// resumed copy's snapshot is later than the slot's consistent point).
	overlap pglogrepl.LSN
}

// New checks cfg and returns a mover; it does no I/O.
func New(cfg Config, j Journal) (*Mover, error) {
	if j == nil {
		return nil, errors.New("mover: a journal is required (the catalog's migration record)")
	}
	cfg = cfg.withDefaults()
	if probs := cfg.validate(); len(probs) > 0 {
		return nil, &PreflightError{Problems: probs}
	}
	slot, pub := Names(cfg.ID)
	return &Mover{
		cfg:    cfg,
		j:      j,
		log:    cfg.Logger.With("migration", cfg.ID),
		slot:   slot,
		pub:    pub,
		th:     newThrottle(cfg.MaxRate),
		notify: make(chan struct{}),
	}, nil
}

// AppliedLSN is the source position up to which every change of the range is durably
// applied on the target.
func (m *Mover) AppliedLSN() pglogrepl.LSN { return pglogrepl.LSN(m.applied.Load()) }

// Err is the catch-up's fatal error, if it stopped on one.
func (m *Mover) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fatal
}

// Start runs preflight, creates the publication and the slot, copies the range (or, for a
// migration whose copy had finished, resumes), then launches the catch-up in the
// background and returns. The catch-up runs until ctx ends or Stop is called. A copy that
// was interrupted resumes with its unfinished chunks (resume.go), or where it cannot,
// starts over.
func (m *Mover) Start(ctx context.Context) (err error) {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("mover: Start called twice; make a new Mover to resume")
	}
	m.started = true
	runCtx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	startDone := make(chan struct{})
	m.startDone = startDone
	m.mu.Unlock()
	defer close(startDone)
	defer func() {
		if err != nil {
			cancel()
			m.closePools()
			m.noteError(err)
		}
	}()

	rec, phase, err := m.loadRecord(runCtx)
	if err != nil {
		return err
	}
	if rec != nil && !rec.Range.Equal(m.cfg.Range) && phase != "" && phase != catalog.PhasePlanned {
		return fmt.Errorf("mover: migration %s moves range %s, not %s: use another id", m.cfg.ID, rec.Range, m.cfg.Range)
	}
	switch phase {
	case "", catalog.PhasePlanned, catalog.PhasePreflight, catalog.PhaseCancelled, catalog.PhaseRolledBack:
		return m.retryCopy(runCtx, func() error { return m.startFresh(runCtx) })
	case catalog.PhaseCopying:
		return m.retryCopy(runCtx, func() error { return m.continueCopy(runCtx, rec) })
	case catalog.PhaseCatchingUp, catalog.PhaseFrozen, catalog.PhaseVerifying:
		return m.resume(runCtx, rec)
	case catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone:
		return fmt.Errorf("mover: %s: %w", m.cfg.ID, ErrFlipped)
	default:
		return fmt.Errorf("mover: migration %s is in unknown phase %q", m.cfg.ID, phase)
	}
}

// continueCopy resumes an interrupted copy, or starts it over where it cannot resume.
func (m *Mover) continueCopy(ctx context.Context, rec *catalog.Migration) error {
	if resumed, err := m.resumeCopy(ctx, rec); resumed || err != nil {
		return err
	}
	m.log.Warn("the copy of this migration was interrupted and cannot resume; removing what it copied and starting it again")
	if err := m.openPools(ctx); err != nil {
		return err
	}
	if err := m.removeCopy(ctx, rec); err != nil {
		return fmt.Errorf("mover: clean up the interrupted copy: %w", err)
	}
	return m.startFresh(ctx)
}

// copyRetryFor bounds how long a copy keeps resuming after failures a reconnect may cure.
const copyRetryFor = 2 * time.Minute

// retryCopy runs a copy and, while it fails for a reason a reconnect may cure (a source or
// target restarting, the network) with the journal in copying, resumes it from the journal
// after a pause: the chunks done stay done.
func (m *Mover) retryCopy(ctx context.Context, run func() error) error {
	deadline := time.Now().Add(copyRetryFor)
	backoff := 500 * time.Millisecond
	for {
		err := run()
		if err == nil || ctx.Err() != nil || !m.copyRetryable(err) || time.Now().After(deadline) {
			return err
		}
		rec, lerr := m.j.Load(ctx, m.cfg.ID)
		if lerr != nil || rec == nil || rec.Phase != catalog.PhaseCopying {
			return err
		}
		m.log.Warn("the copy was interrupted; resuming it", "err", err, "in", backoff)
		if clock.Sleep(ctx, backoff) != nil {
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
		m.closePools() // their connections may be to a server that went away
		run = func() error { return m.continueCopy(ctx, rec) }
	}
}

// copyRetryable: errors of the servers' connections, not of the journal or the move itself.
func (m *Mover) copyRetryable(err error) bool {
	var pe *PreflightError
	switch {
	case errors.As(err, &pe), errors.Is(err, catalog.ErrLockLost), errors.Is(err, catalog.ErrConflict),
		errors.Is(err, ErrSlotInvalidated), errors.Is(err, ErrStaleDriver):
		return false
	}
	return transient(err)
}

func (m *Mover) startFresh(ctx context.Context) error {
	if err := m.update(ctx, func(r *catalog.Migration) {
		r.Phase = catalog.PhasePreflight
		r.Slot, r.Publication = m.slot, m.pub
		r.LastError = ""
	}); err != nil {
		return err
	}
	md, err := preflight(ctx, m.cfg)
	if err != nil {
		return err
	}
	if err := m.openPools(ctx); err != nil {
		return err
	}
	// From here on the source and target change: record it first, so that a crash at any
	// later point is cleaned up by a restart or by Cancel.
	copyStart := time.Now()
	if err := m.update(ctx, func(r *catalog.Migration) {
		r.Phase = catalog.PhaseCopying
		r.ConsistentLSN, r.Snapshot, r.AppliedLSN = "", "", ""
		r.Tables, r.RowsCopied, r.BytesCopied = nil, 0, 0
		r.Timings.Copy, r.Timings.Catchup = 0, 0
	}); err != nil {
		return err
	}
	consistent, err := m.copy(ctx, md)
	if err != nil {
		return err
	}
	st := m.copyStats()
	if err := m.recordCopyDone(ctx, consistent, st, copyStart); err != nil {
		return err
	}
	m.log.Info("copy done", "rows", st.rows(), "bytes", st.bytes(), "seconds", time.Since(copyStart).Seconds())
	m.setApplied(consistent, time.Now())
	m.launchCatchup(ctx)
	return nil
}

// resume continues the catch-up of a migration whose copy had finished.
func (m *Mover) resume(ctx context.Context, rec *catalog.Migration) error {
	if err := m.openPools(ctx); err != nil {
		return err
	}
	s, err := readSlot(ctx, m.srcPool, m.slot)
	if err != nil {
		return err
	}
	switch {
	case !s.exists:
		return fmt.Errorf("mover: replication slot %s is gone from the source, so changes since the copy are lost: cancel migration %s and start it again", m.slot, m.cfg.ID)
	case s.walStatus == "lost":
		return slotInvalidated(m.slot, m.cfg.ID)
	}
	var consistent pglogrepl.LSN
	if rec.ConsistentLSN != "" {
		if consistent, err = pglogrepl.ParseLSN(rec.ConsistentLSN); err != nil {
			return fmt.Errorf("mover: migration %s has a bad consistent LSN %q: %w", m.cfg.ID, rec.ConsistentLSN, err)
		}
	}
	m.overlap = overlapOf(rec)
	m.setApplied(consistent, time.Now())
	m.log.Info("resuming catch-up", "phase", rec.Phase)
	m.launchCatchup(ctx)
	return nil
}

func (m *Mover) openPools(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srcPool == nil {
		p, err := openPool(ctx, source, m.cfg.SourceDSN, appName(m.cfg.ID, "control"), 1)
		if err != nil {
			return err
		}
		m.srcPool = p
	}
	if m.dstPool == nil {
		p, err := openPool(ctx, target, m.cfg.TargetDSN, appName(m.cfg.ID, "control"), 1)
		if err != nil {
			return err
		}
		m.dstPool = p
	}
	return nil
}

func (m *Mover) closePools() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range []*pgxpool.Pool{m.srcPool, m.dstPool} {
		if p != nil {
			p.Close()
		}
	}
	m.srcPool, m.dstPool = nil, nil
}

func (m *Mover) pools() (*pgxpool.Pool, *pgxpool.Pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srcPool, m.dstPool
}

// setApplied moves the applied position forward (never back) and wakes WaitApplied.
func (m *Mover) setApplied(lsn pglogrepl.LSN, at time.Time) {
	for {
		cur := m.applied.Load()
		if uint64(lsn) <= cur {
			return
		}
		if m.applied.CompareAndSwap(cur, uint64(lsn)) {
			break
		}
	}
	m.appliedAt.Store(at.UnixNano())
	m.mu.Lock()
	close(m.notify)
	m.notify = make(chan struct{})
	m.mu.Unlock()
}

// WaitApplied waits until everything up to lsn on the source is applied on the target.
// Take lsn from pg_current_wal_insert_lsn() (or a commit's end): pg_current_wal_lsn() is
// the write position, which lags asynchronous commits. An idle source gets there through
// keepalives; should the position stall short of lsn, WaitApplied commits a tiny
// transaction on the source (an unpublished logical message) so that the WAL sender
// decodes past lsn and says so.
func (m *Mover) WaitApplied(ctx context.Context, lsn pglogrepl.LSN) error {
	// Someone waits (a cutover, most likely inside its window): read the stream eagerly.
	m.waiters.Add(1)
	defer m.waiters.Add(-1)
	lastMove := time.Now()
	stall := 250 * time.Millisecond
	if m.AppliedLSN() < lsn && m.unflushed(ctx, lsn) {
		// The WAL sender cannot see lsn before the source flushes it: make it now.
		m.nudge(ctx)
	}
	for {
		m.mu.Lock()
		ch, running, fatal := m.notify, m.running, m.fatal
		m.mu.Unlock()
		if m.AppliedLSN() >= lsn {
			return nil
		}
		if fatal != nil {
			return fmt.Errorf("mover: catch-up stopped: %w", fatal)
		}
		if !running {
			return errors.New("mover: catch-up is not running: Start the mover first")
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ch:
			lastMove = time.Now()
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			if time.Since(lastMove) >= stall {
				m.nudge(ctx)
				lastMove, stall = time.Now(), time.Second
			}
		}
		t.Stop()
	}
}

// unflushed reports whether the source has not flushed its WAL up to lsn yet.
func (m *Mover) unflushed(ctx context.Context, lsn pglogrepl.LSN) bool {
	src, _ := m.pools()
	if src == nil {
		return false
	}
	var s string
	if err := src.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		return false
	}
	flushed, err := pglogrepl.ParseLSN(s)
	return err == nil && flushed < lsn
}

// nudge commits a logical message on the source, synchronously so that it is flushed (a
// WAL sender decodes flushed WAL only, and PostgreSQL 15 does not flush a lone
// non-transactional message). pgoutput publishes no messages unless asked, so the stream
// carries nothing but a keepalive past it.
func (m *Mover) nudge(ctx context.Context) {
	src, _ := m.pools()
	if src == nil {
		return
	}
	_, err := src.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_logical_emit_message(true, 'reshard', 'wait'); COMMIT")
	if err != nil {
		m.log.Debug("nudge the source's WAL sender", "err", err)
	}
}

// Stop stops the catch-up (or an unfinished Start) and keeps the slot and publication, so
// that a new mover with the same id resumes. It checkpoints the applied position.
func (m *Mover) Stop(ctx context.Context) error {
	m.halt(ctx)
	var err error
	if m.AppliedLSN() != 0 {
		err = m.checkpoint(ctx, false)
	}
	m.closePools()
	return err
}

// halt ends the run and waits for the catch-up goroutine.
func (m *Mover) halt(ctx context.Context) {
	m.mu.Lock()
	cancel, startDone := m.cancel, m.startDone
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if startDone != nil {
		select {
		case <-startDone:
		case <-ctx.Done():
			return
		}
	}
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

func (m *Mover) noteError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	msg := err.Error()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = m.update(ctx, func(r *catalog.Migration) { r.LastError = msg })
}
