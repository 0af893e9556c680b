package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

// Catalog is what a cutover needs of the catalog store (*catalog.Store implements it).
type Catalog interface {
	Load(ctx context.Context) (*catalog.State, error)
	GetMigration(ctx context.Context, id string) (*catalog.Migration, error)
	PutMigration(ctx context.Context, m *catalog.Migration) error
	Freeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration) error
	Unfreeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration) error
	Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, newShard string) error
}

// Replicator is what a cutover needs of the mover that keeps the target caught up.
type Replicator interface {
	WaitApplied(ctx context.Context, lsn pglogrepl.LSN) error
	Stop(ctx context.Context) error
	DropReplication(ctx context.Context) error
	Cancel(ctx context.Context) error
}

// Options tune a cutover.
type Options struct {
	// StragglerTimeout bounds the wait for transactions older than the fence (default 5s).
	StragglerTimeout time.Duration
	// KillStragglers terminates them past the bound instead of rolling back.
	KillStragglers bool
	// CatchupTimeout bounds the wait until the fence LSN is applied (default 30s).
	CatchupTimeout time.Duration
	// SkipVerify turns off the count-and-hash comparison (on by default).
	SkipVerify bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// AfterStep, if set, is called after each step of the window with its name (freeze,
	// fence, drain, catch up, stop apply, verify, sequences, tombstones, flip). The fault
	// tests use it to kill the driver at a chosen point.
	AfterStep func(step string)
}

func (o *Options) defaults() {
	if o.StragglerTimeout <= 0 {
		o.StragglerTimeout = 5 * time.Second
	}
	if o.CatchupTimeout <= 0 {
		o.CatchupTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Env is everything one cutover works on.
type Env struct {
	Catalog Catalog
	Mover   Replicator
	Source  Conn // reshard's control connection to the source shard
	Target  Conn // and to the target
	Key     string
	Tables  []string
}

// Result is what a finished cutover reports.
type Result struct {
	Window     time.Duration // frozen -> flipped: the range's write-unavailability window
	FenceLSN   pglogrepl.LSN
	Rows       int64 // rows verified
	Stragglers []Straggler
	Sequences  []Sequence
	// Steps are the durations of the steps inside the window, in order, to see where
	// the window goes.
	Steps []StepTiming
}

// StepTiming is how long one cutover step took.
type StepTiming struct {
	Step     string        `json:"step"`
	Duration time.Duration `json:"duration"`
}

// ErrAmbiguous is returned when the flip's outcome is unknown (etcd did not answer). The
// fence stays in place, so no write can be lost; a re-run reads the journal and either
// finishes or rolls back.
var ErrAmbiguous = errors.New("the ownership flip may or may not have committed")

// Run performs steps 1-7 of the cutover for migration m, whose mover is caught up. On any
// failure before the flip it undoes the cutover (fence removed, range serving on the
// source, migration catching up again) and returns the cause; the copy and its slot are
// kept, so the caller either retries or calls Rollback. After the flip it returns nil and
// the caller finishes with step 8.
func Run(ctx context.Context, env Env, m *catalog.Migration, opts Options) (Result, error) {
	opts.defaults()
	var res Result
	st, err := env.Catalog.Load(ctx)
	if err != nil {
		return res, fmt.Errorf("cutover %s: %w", m.ID, err)
	}
	// 1. Freeze. From here until the flip, the range takes no writes.
	start := opts.Now()
	last := start
	mark := func(step string) {
		now := opts.Now()
		res.Steps = append(res.Steps, StepTiming{Step: step, Duration: now.Sub(last)})
		last = now
		if opts.AfterStep != nil {
			opts.AfterStep(step)
		}
	}
	if err := env.Catalog.Freeze(ctx, st, m.Range.Lo, m); err != nil {
		return res, fmt.Errorf("cutover %s: freeze: %w", m.ID, err)
	}
	mark("freeze")
	fail := func(step string, cause error) (Result, error) {
		cause = fmt.Errorf("cutover %s: %s: %w", m.ID, step, cause)
		if uerr := Undo(context.WithoutCancel(ctx), env, m); uerr != nil {
			return res, fmt.Errorf("%w; undoing the cutover failed too, the range stays fenced (re-run to finish or roll back): %v", cause, uerr)
		}
		return res, cause
	}
	// 2. Fence.
	if err := SetFence(ctx, env.Source, m.ID, m.Range); err != nil {
		return fail("fence", err)
	}
	mark("fence")
	// 3. Drain transactions that may not see the fence.
	at, err := fenceTime(ctx, env.Source)
	if err != nil {
		return fail("drain", err)
	}
	if res.Stragglers, err = WaitStragglers(ctx, env.Source, at, opts.StragglerTimeout, opts.KillStragglers); err != nil {
		return fail("drain", err)
	}
	mark("drain")
	// 4. Everything the source accepted is before the fence LSN; wait until it is applied.
	if res.FenceLSN, err = FenceLSN(ctx, env.Source, m.ID); err != nil {
		return fail("fence LSN", err)
	}
	m.FenceLSN = res.FenceLSN.String()
	wctx, cancel := context.WithTimeout(ctx, opts.CatchupTimeout)
	err = env.Mover.WaitApplied(wctx, res.FenceLSN)
	cancel()
	if err != nil {
		return fail("catch up to the fence LSN "+res.FenceLSN.String(), err)
	}
	mark("catch up")
	if err := env.Mover.Stop(ctx); err != nil {
		return fail("stop apply", err)
	}
	m.Phase = catalog.PhaseVerifying
	if err := env.Catalog.PutMigration(ctx, m); err != nil {
		return fail("journal", err)
	}
	mark("stop apply")
	// 5. Verify: both sides are quiet now (fenced source, unpublished target).
	if !opts.SkipVerify {
		v, err := Verify(ctx, env.Source, env.Target, env.Key, env.Tables, m.Range)
		if err != nil {
			return fail("verify", err)
		}
		res.Rows = v.Rows
		m.RowsVerified = v.Rows
		mark("verify")
	}
	// 6. Sequences.
	if res.Sequences, err = SyncSequences(ctx, env.Source, env.Target, env.Tables); err != nil {
		return fail("sequences", err)
	}
	mark("sequences")
	// A range moving back to a shard it once left finds a tombstone there: lift it for
	// the range's keys, so writes land once the flip sends them here.
	if err := ClearTombstones(ctx, env.Target, m.Range); err != nil {
		return fail("tombstones", err)
	}
	mark("tombstones")
	// 7. Flip. Load again: the journal writes above moved the migration's revision.
	st, err = env.Catalog.Load(ctx)
	if err != nil {
		return fail("flip", err)
	}
	window := opts.Now().Sub(start)
	m.Timings.CutoverWindow = window.Seconds()
	if err := env.Catalog.Flip(ctx, st, m.Range.Lo, m, m.Target); err != nil {
		return res, flipFailed(ctx, env, m, err)
	}
	mark("flip")
	res.Window = opts.Now().Sub(start)
	return res, nil
}

// flipFailed decides what a failed flip means. If the journal says flipped, the flip did
// commit (its response was lost). If it says not flipped, roll back. If etcd cannot say,
// leave everything as it is: the fence keeps the range safe until a re-run.
func flipFailed(ctx context.Context, env Env, m *catalog.Migration, ferr error) error {
	rctx := context.WithoutCancel(ctx)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := env.Catalog.GetMigration(rctx, m.ID)
		if err == nil {
			if cur.Phase == catalog.PhaseFlipped || cur.Phase == catalog.PhaseCleaningUp || cur.Phase == catalog.PhaseDone {
				*m = *cur
				return nil
			}
			*m = *cur
			cause := fmt.Errorf("cutover %s: flip: %w", m.ID, ferr)
			if uerr := Undo(rctx, env, m); uerr != nil {
				return fmt.Errorf("%w; undoing the cutover failed too, the range stays fenced (re-run to finish or roll back): %v", cause, uerr)
			}
			return cause
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	return fmt.Errorf("cutover %s: %w: %v; the range stays fenced on %s: re-run the migration to finish or roll back", m.ID, ErrAmbiguous, ferr, m.Source)
}

// Undo reverses steps 1-2 of a cutover that has not flipped: the fence is removed and
// the range serves again from the source, with the migration back to catching up. It
// is idempotent; the journal's revision compare in Flip guarantees the flip did not
// happen when the journal says frozen or verifying.
func Undo(ctx context.Context, env Env, m *catalog.Migration) error {
	cur, err := env.Catalog.GetMigration(ctx, m.ID)
	if err != nil {
		return err
	}
	*m = *cur
	switch m.Phase {
	case catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone:
		return fmt.Errorf("migration %s has flipped: its cutover cannot be undone", m.ID)
	}
	if err := DropFence(ctx, env.Source, m.ID); err != nil {
		return err
	}
	st, err := env.Catalog.Load(ctx)
	if err != nil {
		return err
	}
	m.Phase = catalog.PhaseCatchingUp
	if i := rangeOf(st, m.Range.Lo); i >= 0 && st.Ranges[i].State == catalog.RangeFrozen && st.Ranges[i].Migration == m.ID {
		return env.Catalog.Unfreeze(ctx, st, m.Range.Lo, m)
	}
	return env.Catalog.PutMigration(ctx, m)
}

// Rollback undoes a migration that has not flipped: remove the fence, put the range back
// to serving, remove the target's copy (slot, publication, rows). It is idempotent and
// refuses a migration that has flipped.
func Rollback(ctx context.Context, env Env, m *catalog.Migration, cause error) error {
	return rollback(ctx, env, m, cause, catalog.PhaseRolledBack)
}

// rollback ends the migration in phase (rolled_back, or cancelled by the operator).
func rollback(ctx context.Context, env Env, m *catalog.Migration, cause error, phase string) error {
	cur, err := env.Catalog.GetMigration(ctx, m.ID)
	if err != nil {
		return err
	}
	*m = *cur
	switch m.Phase {
	case catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone:
		return fmt.Errorf("migration %s has flipped: it cannot be rolled back (finish it with `reshard cleanup %s`)", m.ID, m.ID)
	}
	if env.Mover != nil {
		if err := env.Mover.Cancel(ctx); err != nil {
			return fmt.Errorf("cancel the copy: %w", err)
		}
		// The mover journals its cancel: continue from the record it wrote.
		if cur, err = env.Catalog.GetMigration(ctx, m.ID); err != nil {
			return err
		}
		*m = *cur
	}
	if err := DropFence(ctx, env.Source, m.ID); err != nil {
		return err
	}
	st, err := env.Catalog.Load(ctx)
	if err != nil {
		return err
	}
	m.Phase = phase
	if cause != nil {
		m.LastError = cause.Error()
	}
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
