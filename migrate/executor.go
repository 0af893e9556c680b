package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/mover"
)

// Catalog is what a migration needs of the catalog store (*catalog.Store implements it):
// the window's reads and writes, and the splits and the journals a plan reads.
type Catalog interface {
	cutover.Catalog
	Split(ctx context.Context, st *catalog.State, lo, at int64) error
	ListMigrations(ctx context.Context) ([]catalog.Migration, error)
	// ClaimSlots claims the move slots of shards for migration id under its lock (a plan's
	// per-shard limit across drivers).
	ClaimSlots(ctx context.Context, l *catalog.Lock, id string, shards ...string) error
	// SlotHolders names the claim holding each busy shard slot.
	SlotHolders(ctx context.Context) (map[string]string, error)
}

// Mover is what the executor needs of a mover for one migration (mover.Mover implements it):
// what the window needs (cutover.Replicator), and start, lag and the removal of the
// replication and of the copy.
type Mover interface {
	cutover.Replicator
	Start(ctx context.Context) error
	Lag(ctx context.Context) (bytes int64, seconds float64, err error)
	Err() error
	DropReplication(ctx context.Context) error
	Remover
}

// Remover removes what a migration that will never flip left behind.
type Remover interface {
	// Remove drops slot, publication and progress row and, with targetRows, the range's
	// rows on the target; it is called only once the journal says the migration will
	// never flip.
	Remove(ctx context.Context, targetRows bool) error
}

// MoverFactory builds the mover of migration m between two shards' connection strings,
// checkpointing into j, for the driver with fencing token token (see mover.Config.Token).
type MoverFactory func(m *catalog.Migration, sourceDSN, targetDSN string, j *Journal, token int64) (Mover, error)

// Executor runs migrations end to end: mover, cutover, cleanup, each step journaled in
// the catalog so that a re-run after a crash at any point finishes or rolls back.
//
// A driver acts on a migration only while it holds the migration's lease lock: every
// journal and catalog write of the migration compares the lock (catalog.HeldBy), the work
// stops when the lock may have been lost (its context ends), each statement that changes
// a shard on the migration's behalf is preceded by a check of the lock, and the fence
// rows it writes carry the lock's fencing token, so a driver that was paused past its
// lease cannot undo what the driver that took over did.
type Executor struct {
	Catalog  Catalog
	NewMover MoverFactory
	// Lock takes the migration's lease lock, without waiting (required).
	Lock func(ctx context.Context, id string) (*catalog.Lock, error)
	// DSN resolves a shard's connection string (dsn or dsn_env).
	DSN func(catalog.Shard) (string, error)
	// Preflight, if set, checks before migration m is created, reading only, that its
	// mover can run between the two shards (mover.Preflight with the mover's settings):
	// the last of CheckMove's checks.
	Preflight func(ctx context.Context, m *catalog.Migration, sourceDSN, targetDSN string) error
	Options   ExecOptions
	Log       *slog.Logger
	// Observer, if set, is told of the journal records, cutovers and failed runs of the
	// migrations this driver runs (metrics).
	Observer Observer
}

// ExecOptions tune a move.
type ExecOptions struct {
	Cutover cutover.Options
	// MaxCutoverLag is the lag (bytes) under which the cutover may start; default 1 MiB.
	MaxCutoverLag int64
	// CleanupLater leaves the source rows (fenced) for `reshard cleanup`.
	CleanupLater bool
	Delete       cutover.DeleteOptions
	// Retries of a cutover rolled back for a transient reason (stragglers, catch-up timeout).
	CutoverRetries int
	// BeforeCutover, if set, is called once the target is caught up, just before each
	// cutover attempt, while the catch-up still runs (fault tests restart a shard there).
	BeforeCutover func()
	// BeforeCleanup, if set, is called when the cleanup of a flipped migration starts
	// (tests look at a driver there, after its cutover).
	BeforeCleanup func()
}

// MoveRequest asks for one range to move to a shard.
type MoveRequest struct {
	ID     string
	Range  catalog.KeyRange
	Target string
	Plan   string
}

// ErrNothingToDo is returned for a move of a range to the shard that already owns it.
var ErrNothingToDo = errors.New("the range is already on that shard")

// ErrRolledBack is returned for a migration that ended (or ends now) rolled back or
// cancelled: nothing moved.
var ErrRolledBack = errors.New("the migration was rolled back: nothing moved")

func (e *Executor) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Move creates (or resumes, for an existing id) the migration of req.Range to req.Target
// and runs it to the end. The range must be exactly one catalog range; see Carve. The
// migration's lock is taken before its journal is created.
func (e *Executor) Move(ctx context.Context, req MoveRequest) (*catalog.Migration, error) {
	ss, err := e.open(ctx, req.ID, func(ctx context.Context, cat Catalog) (*catalog.Migration, error) {
		return create(ctx, cat, req)
	})
	if err != nil {
		return ss.migration(), err
	}
	defer ss.close()
	return e.driveObserved(ss)
}

// driveObserved drives an open migration and tells the observer if the run failed.
func (e *Executor) driveObserved(ss *session) (*catalog.Migration, error) {
	m, err := e.drive(ss)
	if err != nil && m != nil {
		e.observer().Failed(m)
	}
	return m, err
}

// create writes the journal of a new migration, after checking the request against the
// catalog: the range is exactly one catalog range, on another shard than the target, and
// no unfinished migration overlaps it (a move back before the first one's cleanup would
// let that cleanup delete rows of the range from its new owner).
func create(ctx context.Context, cat Catalog, req MoveRequest) (*catalog.Migration, error) {
	st, err := cat.Load(ctx)
	if err != nil {
		return nil, err
	}
	r, ok := st.Owner(req.Range.Lo)
	if !ok || !r.Range.Equal(req.Range) {
		return nil, fmt.Errorf("move %s: no catalog range is exactly %s (split it first: reshard split)", req.ID, req.Range)
	}
	if r.Shard == req.Target {
		return nil, fmt.Errorf("move %s: range %s is on %s: %w", req.ID, r.Range, r.Shard, ErrNothingToDo)
	}
	if _, ok := st.Shards[req.Target]; !ok {
		return nil, fmt.Errorf("move %s: unknown target shard %q (see reshard shard list)", req.ID, req.Target)
	}
	for _, o := range st.Migrations {
		if !o.Terminal() && o.Range.Overlaps(r.Range) {
			return nil, fmt.Errorf("move %s: migration %s (%s, %s) of range %s is not finished: finish it first (re-run it, `reshard cleanup %s` or `reshard cancel %s`)",
				req.ID, o.ID, o.Phase, o.Source+" -> "+o.Target, o.Range, o.ID, o.ID)
		}
	}
	m := &catalog.Migration{ID: req.ID, Kind: catalog.KindMove, Range: r.Range, Source: r.Shard, Target: req.Target,
		Phase: catalog.PhasePlanned, Plan: req.Plan}
	if err := cat.PutMigration(ctx, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Resume drives migration id from wherever its journal says it is.
func (e *Executor) Resume(ctx context.Context, id string) (*catalog.Migration, error) {
	ss, err := e.open(ctx, id, nil)
	if err != nil {
		return ss.migration(), err
	}
	defer ss.close()
	return e.driveObserved(ss)
}

// drive runs an open migration to its end.
func (e *Executor) drive(ss *session) (*catalog.Migration, error) {
	ctx, m, env := ss.ctx, ss.m, &ss.env
	switch {
	case m.Phase == catalog.PhaseDone:
		return m, nil
	case m.Terminal():
		return m, fmt.Errorf("migration %s %w (%s): %s; start a new one", m.ID, ErrRolledBack, m.Phase, orNone(m.LastError))
	case m.Phase == catalog.PhaseRollingBack:
		// A rollback stopped half way: finish it.
		err := rollback(ctx, *env, ss.mv, m, nil, m.RollbackTo)
		return m, errors.Join(fmt.Errorf("migration %s %w: %s", m.ID, ErrRolledBack, orNone(m.LastError)), err)
	case m.Flipped():
		return m, e.finish(ss)
	case m.Phase == catalog.PhaseFrozen || m.Phase == catalog.PhaseVerifying:
		// A driver died mid-cutover, before the flip: undo the cutover (not the copy)
		// and go again. The journal's revision compare in Flip made sure it did not flip.
		if err := cutover.Undo(ctx, *env, m); err != nil {
			return m, err
		}
	}
	if err := e.copyAndCutover(ss); err != nil {
		return ss.m, ss.interrupted(err)
	}
	return ss.m, e.finish(ss)
}

func orNone(s string) string {
	if s == "" {
		return "no error recorded"
	}
	return s
}

// copyAndCutover runs the mover and the cutover, retrying a cutover undone for a transient
// reason, and rolls the migration back on any other failure. On success ss.m is flipped.
func (e *Executor) copyAndCutover(ss *session) error {
	ctx, env := ss.ctx, &ss.env
	m := ss.m
	attempts := e.Options.CutoverRetries + 1
	for attempt := 1; ; attempt++ {
		// Again before each retry, in case the guard was removed meanwhile (SetFence
		// checks it; a cleanup of another migration may race this one's start).
		if err := e.guard(ss); err != nil {
			return err
		}
		j := NewJournal(env.Catalog, m)
		mv, err := e.NewMover(m, ss.srcDSN, ss.dstDSN, j, env.Token())
		if err != nil {
			return err
		}
		ss.useMover(mv)
		copyStart := time.Now()
		if err := mv.Start(ctx); err != nil {
			ss.m = j.Seal()
			return ss.interrupted(stopped(m.ID, err))
		}
		if err := e.catchUp(ss, mv); err != nil {
			_ = mv.Stop(context.WithoutCancel(ctx))
			ss.m = j.Seal()
			return ss.interrupted(stopped(m.ID, err))
		}
		m = j.Seal()
		ss.m = m
		// The control connections may have died with a source or target restart during
		// the catch-up: the cutover needs them alive.
		if err := e.reconnect(ctx, m.ID, env, ss.srcDSN, ss.dstDSN); err != nil {
			return err
		}
		if m.Timings.Catchup == 0 {
			m.Timings.Catchup = time.Since(copyStart).Seconds() - m.Timings.Copy
		}
		env.Log.Info("cutover", "range", m.Range.String(), "attempt", attempt)
		res, err := cutover.Run(ctx, *env, m, e.Options.Cutover)
		if err == nil {
			e.observer().CutOver(m)
			env.Log.Info("flipped", "window", res.Window.String(), "predicted", res.Predicted.Total.String(), "steps", fmtSteps(res.Steps),
				"rows_verified", res.Rows, "window_rows", res.WindowRows, "changed_since", res.ChangedSince)
			return nil
		}
		// The catch-up may still run (a cutover that failed before it stopped apply): stop
		// it, so a retry's mover can take the slot and nothing writes the target meanwhile.
		_ = mv.Stop(context.WithoutCancel(ctx))
		if ierr := ss.interrupted(err); ierr != err {
			return ierr
		}
		if attempt < attempts && retryable(err) && ctx.Err() == nil {
			// The cutover was undone but the copy kept: catch up again and retry.
			env.Log.Warn("cutover undone, retrying", "attempt", attempt, "err", err)
			continue
		}
		rctx := context.WithoutCancel(ctx)
		if rerr := Rollback(rctx, *env, mv, m, err); rerr != nil {
			return fmt.Errorf("%w; rolling back failed too (re-run or reshard cancel %s): %v", err, m.ID, rerr)
		}
		return fmt.Errorf("%w (rolled back: the range serves from %s)", err, m.Source)
	}
}

// interrupted says so when err comes of the driver's lock being lost: the driver stops
// there, leaving everything to the process that holds the lock now.
func (ss *session) interrupted(err error) error {
	if err == nil || errors.Is(err, errInterrupted) {
		return err
	}
	if cause := context.Cause(ss.ctx); errors.Is(cause, catalog.ErrLockLost) || errors.Is(err, catalog.ErrLockLost) {
		return fmt.Errorf("migration %s: %w; the process that holds it now (or a re-run) carries on: %w", ss.m.ID, errInterrupted, errors.Join(err, cause))
	}
	return err
}

var errInterrupted = errors.New("this driver lost the migration's lock and stopped")

// stopped says what to do about a move whose copy or catch-up stopped: re-run it, unless
// a re-run can only stop the same way.
func stopped(id string, err error) error {
	if errors.Is(err, mover.ErrTruncated) {
		return fmt.Errorf("move %s: %w (reshard cancel %s, then move again)", id, err, id)
	}
	return fmt.Errorf("move %s: %w (re-run to resume, or reshard cancel %s)", id, err, id)
}

func retryable(err error) bool {
	return errors.Is(err, cutover.ErrStragglers) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, cutover.ErrGuardMissing) ||
		errors.Is(err, cutover.ErrWindowTooLong)
}

// catchUp waits until the target is caught up, serving `reshard verify ID`'s hold
// requests meanwhile; no hold outlasts it.
func (e *Executor) catchUp(ss *session, mv Mover) error {
	stopHolds := e.serveHolds(ss, mv)
	defer stopHolds()
	if err := e.waitLag(ss.ctx, mv); err != nil {
		return err
	}
	if e.Options.BeforeCutover != nil {
		e.Options.BeforeCutover()
	}
	return nil
}

func (e *Executor) waitLag(ctx context.Context, mv Mover) error {
	limit := e.Options.MaxCutoverLag
	if limit <= 0 {
		limit = 1 << 20
	}
	for {
		if err := mv.Err(); err != nil {
			return fmt.Errorf("catch-up stopped: %w", err)
		}
		b, _, err := mv.Lag(ctx)
		if err == nil && b <= limit {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func fmtSteps(steps []cutover.StepTiming) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%s=%.1fms", s.Step, float64(s.Duration.Microseconds())/1000)
	}
	return strings.Join(parts, " ")
}

// reconnect replaces a control connection that no longer answers.
func (e *Executor) reconnect(ctx context.Context, id string, env *cutover.Env, srcDSN, dstDSN string) error {
	for _, c := range []struct {
		conn *cutover.Conn
		dsn  string
		role string
	}{{&env.Source, srcDSN, "source"}, {&env.Target, dstDSN, "target"}} {
		old := (*c.conn).(*pgx.Conn)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := old.Ping(pctx)
		cancel()
		if err == nil {
			continue
		}
		env.Log.Warn("control connection lost; reconnecting", "role", c.role, "err", err)
		nc, err := connectAs(ctx, c.dsn, id)
		if err != nil {
			return fmt.Errorf("reconnect to the %s (%s): %w", c.role, catalog.MaskDSN(c.dsn), err)
		}
		old.Close(context.WithoutCancel(ctx))
		*c.conn = nc
	}
	return nil
}
