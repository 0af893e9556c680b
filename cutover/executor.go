package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/mover"
)

// Mover is what the executor needs of a mover for one migration (mover.Mover implements it).
type Mover interface {
	Replicator
	Start(ctx context.Context) error
	Lag(ctx context.Context) (bytes int64, seconds float64, err error)
	Err() error
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
	DSN     func(catalog.Shard) (string, error)
	Options ExecOptions
	Log     *slog.Logger
}

// ExecOptions tune a move.
type ExecOptions struct {
	Cutover Options
	// MaxCutoverLag is the lag (bytes) under which the cutover may start; default 1 MiB.
	MaxCutoverLag int64
	// CleanupLater leaves the source rows (fenced) for `reshard cleanup`.
	CleanupLater bool
	Delete       DeleteOptions
	// Retries of a cutover rolled back for a transient reason (stragglers, catch-up timeout).
	CutoverRetries int
	// BeforeCutover, if set, is called once the target is caught up, just before each
	// cutover attempt, while the catch-up still runs (fault tests restart a shard there).
	BeforeCutover func()
}

// MoveRequest asks for one range to move to a shard.
type MoveRequest struct {
	ID     string
	Range  catalog.KeyRange
	Target string
	Plan   string
}

// Splitter is the catalog's split, for carving a sub-range out of a catalog range.
type Splitter interface {
	Split(ctx context.Context, st *catalog.State, lo, at int64) error
}

// Carve splits the catalog so that r is exactly one range: r must lie inside one serving
// range, which is cut at r's bounds. Both parts stay on their shard, so no data moves and
// no write waits. It returns the state after the splits.
func Carve(ctx context.Context, cat Catalog, sp Splitter, r catalog.KeyRange) (*catalog.State, error) {
	st, err := cat.Load(ctx)
	if err != nil {
		return nil, err
	}
	owner, ok := st.Owner(r.Lo)
	if !ok {
		return nil, fmt.Errorf("range %s: no catalog range holds key %d", r, r.Lo)
	}
	if !owner.Range.Covers(r) {
		return nil, fmt.Errorf("range %s spans several catalog ranges (it starts in %s): move each range separately", r, owner.Range)
	}
	if owner.Range.Equal(r) {
		return st, nil
	}
	if owner.State != catalog.RangeServing {
		return nil, fmt.Errorf("range %s is %s (migration %s): wait for it or cancel it", owner.Range, owner.State, owner.Migration)
	}
	if r.Lo > owner.Range.Lo {
		if err := sp.Split(ctx, st, owner.Range.Lo, r.Lo); err != nil {
			return nil, err
		}
	}
	if !r.HiInf && (owner.Range.HiInf || r.Hi < owner.Range.Hi) {
		if err := sp.Split(ctx, st, r.Lo, r.Hi); err != nil {
			return nil, err
		}
	}
	return st, nil
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
	return e.drive(ss)
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
	i := rangeOf(st, req.Range.Lo)
	if i < 0 || !st.Ranges[i].Range.Equal(req.Range) {
		return nil, fmt.Errorf("move %s: no catalog range is exactly %s (split it first: reshard split)", req.ID, req.Range)
	}
	r := st.Ranges[i]
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
	return e.drive(ss)
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
		err := rollback(ctx, *env, m, nil, m.RollbackTo)
		return m, errors.Join(fmt.Errorf("migration %s %w: %s", m.ID, ErrRolledBack, orNone(m.LastError)), err)
	case m.Flipped():
		return m, e.finish(ss)
	case m.Phase == catalog.PhaseFrozen || m.Phase == catalog.PhaseVerifying:
		// A driver died mid-cutover, before the flip: undo the cutover (not the copy)
		// and go again. The journal's revision compare in Flip made sure it did not flip.
		if err := Undo(ctx, *env, m); err != nil {
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

// guard installs the fence trigger on both shards before anything is copied, so the
// cutover takes no DDL lock, and fences the range on the target with this driver's token:
// until the flip, the target refuses client writes to the incoming range (reshard's own
// sessions pass), so no write a misrouted client made there can be lost to a rollback.
func (e *Executor) guard(ss *session) error {
	ctx, m, env := ss.ctx, ss.m, ss.env
	if err := InstallGuard(ctx, env.Source, env.Key, env.Tables); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if err := InstallGuard(ctx, env.Target, env.Key, env.Tables); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := env.mayWrite(); err != nil {
		return err
	}
	if err := SetFence(ctx, env.Target, m.ID, m.Range, env.Tables, env.token()); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
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
		mv, err := e.NewMover(m, ss.srcDSN, ss.dstDSN, j, env.token())
		if err != nil {
			return err
		}
		env.Mover = mv
		copyStart := time.Now()
		if err := mv.Start(ctx); err != nil {
			ss.m = j.Seal()
			return ss.interrupted(stopped(m.ID, err))
		}
		if err := e.waitLag(ctx, mv); err != nil {
			_ = mv.Stop(context.WithoutCancel(ctx))
			ss.m = j.Seal()
			return ss.interrupted(stopped(m.ID, err))
		}
		if e.Options.BeforeCutover != nil {
			e.Options.BeforeCutover()
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
		e.log().Info("cutover", "migration", m.ID, "range", m.Range.String(), "attempt", attempt)
		res, err := Run(ctx, *env, m, e.Options.Cutover)
		if err == nil {
			e.log().Info("flipped", "migration", m.ID, "window", res.Window, "steps", fmtSteps(res.Steps))
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
			e.log().Warn("cutover undone, retrying", "migration", m.ID, "attempt", attempt, "err", err)
			continue
		}
		rctx := context.WithoutCancel(ctx)
		if rerr := Rollback(rctx, *env, m, err); rerr != nil {
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
	return errors.Is(err, ErrStragglers) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrGuardMissing)
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

// finish is step 8: open the range on the target (again: idempotent), tombstone the fence
// on the source, drop slot and publication, delete the range's rows from the source
// (unless CleanupLater), and mark the migration done.
func (e *Executor) finish(ss *session) error {
	ctx, env, m := ss.ctx, ss.env, ss.m
	start := time.Now()
	if err := env.mayWrite(); err != nil {
		return ss.interrupted(err)
	}
	if err := OpenRange(ctx, env.Target, m.ID, m.Range); err != nil {
		return fmt.Errorf("cleanup %s: target: %w", m.ID, err)
	}
	if err := MarkTombstone(ctx, env.Source, m.ID, m.Range, env.token()); err != nil {
		return err
	}
	if env.Mover == nil {
		mv, err := e.NewMover(m, ss.srcDSN, ss.dstDSN, sealedJournal(env.Catalog, m), env.token())
		if err != nil {
			return err
		}
		env.Mover = mv
	}
	if err := env.Mover.DropReplication(ctx); err != nil {
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
	del.Check, del.Tombstone = env.mayWrite, m.ID
	if _, err := DeleteRange(ctx, env.Source, env.Key, env.Tables, m.Range, del); err != nil {
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
		if err := ss.env.mayWrite(); err != nil {
			return m, err
		}
		if err := DropFence(ss.ctx, ss.env.Source, m.ID, ss.env.token()); err != nil {
			return m, err
		}
		kept, err := RemoveGuard(ss.ctx, ss.env.Source, ss.env.Tables, guardInUse(e.Catalog, m.Source, m.ID))
		if err != nil {
			return m, fmt.Errorf("shard %s: %w", m.Source, err)
		}
		if kept != "" {
			e.log().Warn("fence guard trigger kept", "shard", m.Source, "why", kept)
		}
	}
	return m, nil
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
	if ss.env.Mover, err = e.NewMover(m, ss.srcDSN, ss.dstDSN, sealedJournal(ss.env.Catalog, m), ss.env.token()); err != nil {
		return m, err
	}
	return m, ss.interrupted(rollback(ss.ctx, ss.env, m, errors.New("cancelled by the operator"), catalog.PhaseCancelled))
}

func fmtSteps(steps []StepTiming) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%s=%.1fms", s.Step, float64(s.Duration.Microseconds())/1000)
	}
	return strings.Join(parts, " ")
}

// reconnect replaces a control connection that no longer answers.
func (e *Executor) reconnect(ctx context.Context, id string, env *Env, srcDSN, dstDSN string) error {
	for _, c := range []struct {
		conn *Conn
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
		e.log().Warn("control connection lost; reconnecting", "role", c.role, "err", err)
		nc, err := connectAs(ctx, c.dsn, id)
		if err != nil {
			return fmt.Errorf("reconnect to the %s (%s): %w", c.role, catalog.MaskDSN(c.dsn), err)
		}
		old.Close(context.WithoutCancel(ctx))
		*c.conn = nc
	}
	return nil
}

// releaseGuards removes the fence guard from the source and the target of m, which has
// ended without flipping, where no fence is left and no other unfinished migration uses
// the shard. The migration has ended by then, so a guard that cannot go now is only
// logged: it costs a trigger call per write, and the next rollback, cancel or
// `cleanup --drop-fence` on the shard removes it.
func releaseGuards(ctx context.Context, env Env, m *catalog.Migration) {
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, sh := range []struct {
		db    Conn
		shard string
	}{{env.Source, m.Source}, {env.Target, m.Target}} {
		if sh.db == nil {
			continue
		}
		kept, err := RemoveGuard(ctx, sh.db, env.Tables, guardInUse(env.Catalog, sh.shard, m.ID))
		switch {
		case err != nil:
			log.Warn("fence guard trigger not removed", "shard", sh.shard, "migration", m.ID, "err", err)
		case kept != "":
			log.Info("fence guard trigger kept", "shard", sh.shard, "migration", m.ID, "why", kept)
		}
	}
}

// guardInUse is RemoveGuard's question for shard: the unfinished migrations other than
// self that have it as source or target. Each of them fences the shard at its cutover
// (the source; the target until the flip), so its trigger must stay.
func guardInUse(cat Catalog, shard, self string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		st, err := cat.Load(ctx)
		if err != nil {
			return "", fmt.Errorf("read the migrations using shard %s: %w", shard, err)
		}
		var users []string
		for _, m := range st.Migrations {
			if m.ID != self && !m.Terminal() && (m.Source == shard || m.Target == shard) {
				users = append(users, fmt.Sprintf("%s (%s, %s -> %s)", m.ID, m.Phase, m.Source, m.Target))
			}
		}
		if len(users) == 0 {
			return "", nil
		}
		sort.Strings(users)
		return "unfinished migrations use the shard: " + strings.Join(users, ", "), nil
	}
}
