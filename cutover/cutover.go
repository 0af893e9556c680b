package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Catalog is what a cutover needs of the catalog store (*catalog.Store implements it).
type Catalog interface {
	Load(ctx context.Context) (*catalog.State, error)
	GetMigration(ctx context.Context, id string) (*catalog.Migration, error)
	PutMigration(ctx context.Context, m *catalog.Migration, opts ...catalog.WriteOption) error
	Freeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error
	Unfreeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error
	Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, newShard string, opts ...catalog.WriteOption) error
}

// Replicator is what a cutover needs of the mover that keeps the target caught up: wait
// until it has applied the fence LSN, and stop it after the flip.
type Replicator interface {
	WaitApplied(ctx context.Context, lsn pglogrepl.LSN) error
	Stop(ctx context.Context) error
}

// Lease is a driver's hold on its migration (*catalog.Lock implements it).
type Lease interface {
	// Err is non-nil once the lease may have been lost: checked right before each
	// statement on PostgreSQL that no etcd compare can guard.
	Err() error
	// Token is the driver's fencing token, written into the fence rows it sets.
	Token() int64
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
	// Now is the clock (tests); default time.Now. It must be safe for concurrent use.
	Now func() time.Time
	// VerifyConns is how many connections per shard the verify hashes the tables on at
	// once, one statement each (default 4; at most one per table). They are opened before
	// the freeze, with the control connection's settings; the control connections sync
	// the sequences meanwhile. Even a small range gains: on a busy shard the wait for CPU,
	// not the hashing, is most of a statement's time, and the waits overlap.
	VerifyConns int
	// AfterStep, if set, is called after each step of the window with its name (freeze,
	// fence, drain, catch up, verify, sequences, flip, open), in that order, from
	// Run's goroutine, then after "stop apply", which ends after the flip. The fault tests
	// use it to kill the driver at a chosen point.
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
	if o.VerifyConns <= 0 {
		o.VerifyConns = 4
	}
}

// Env is everything one cutover works on.
type Env struct {
	// Catalog takes the migration's writes; migrate.Executor's compares its lock in each.
	Catalog Catalog
	Mover   Replicator
	Source  Conn // reshard's control connection to the source shard
	Target  Conn // and to the target
	Key     string
	Tables  []string
	Log     *slog.Logger // nil: no log
	// Lease is the driver's lock on the migration; nil (tests that run a cutover
	// directly) checks nothing and writes token 0.
	Lease Lease
}

// MayWrite is checked right before a statement that changes a shard on the migration's
// behalf: a driver whose lock may have been lost must not act on what it read before.
func (env Env) MayWrite() error {
	if env.Lease == nil {
		return nil
	}
	return env.Lease.Err()
}

// Token is the fencing token the driver writes into the fence rows it sets (0 without a
// lease).
func (env Env) Token() int64 {
	if env.Lease == nil {
		return 0
	}
	return env.Lease.Token()
}

// Result is what a finished cutover reports.
type Result struct {
	// Window is frozen -> flipped and open on the target: the range's write-unavailability
	// window as a client sees it.
	Window     time.Duration
	FenceLSN   pglogrepl.LSN
	Rows       int64 // rows verified
	Stragglers []Straggler
	Sequences  []Sequence
	// CatchupBefore is the catch-up to the source's present right before the freeze
	// (outside the window).
	CatchupBefore time.Duration
	// Steps are the durations of the steps inside the window, in order, to see where the
	// window goes, then of stop apply, which starts with the verify and ends after the
	// flip. Steps overlap: the sequences and the source half of the verify run during the
	// catch-up, so the verify counts from the end of the catch-up, and the steps can add
	// up to more than the window.
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
// kept, so the caller (migrate.Executor) either retries or rolls the migration back. After
// the flip it returns nil and the caller finishes with step 8.
//
// The window (freeze to flip) is kept short without dropping a check or moving one past
// the flip. Before the freeze, outside the window: extra connections for the verify are
// opened, and the mover is brought up to the source's present (catchUpBefore). Inside,
// what does not depend on each other runs in parallel: once the drain is over the source's
// rows of the range are final, so while the mover catches up to the fence LSN the source
// half of the verify, the sequences and the journal write run; once it has caught up, the
// target half of the verify runs. The mover stops after the flip, before Run returns.
// Statements in the window take one round trip each.
func Run(ctx context.Context, env Env, m *catalog.Migration, opts Options) (Result, error) {
	opts.defaults()
	var res Result
	st, err := env.Catalog.Load(ctx)
	if err != nil {
		return res, fmt.Errorf("cutover %s: %w", m.ID, err)
	}
	var srcMore, dstMore []Querier
	var cols Columns
	if !opts.SkipVerify {
		// Read before the freeze, so the verify in the window stays one statement per lane.
		if cols, err = ReadColumns(ctx, env.Source, env.Tables); err != nil {
			return res, fmt.Errorf("cutover %s: source: %w", m.ID, err)
		}
		more := openVerifyConns(ctx, env, min(opts.VerifyConns, len(env.Tables)))
		defer more.close(context.WithoutCancel(ctx))
		srcMore, dstMore = more.src, more.dst
	}
	warmUp(ctx, env, srcMore, dstMore, cols, m.Range)
	if res.CatchupBefore, err = catchUpBefore(ctx, env, m.ID, opts.CatchupTimeout); err != nil {
		return res, fmt.Errorf("cutover %s: %w", m.ID, err)
	}
	// 1. Freeze. From here until the flip, the range takes no writes.
	start := opts.Now()
	lap := start
	step := func(name string, d time.Duration) {
		res.Steps = append(res.Steps, StepTiming{Step: name, Duration: d})
		if opts.AfterStep != nil {
			opts.AfterStep(name)
		}
	}
	mark := func(name string) {
		now := opts.Now()
		step(name, now.Sub(lap))
		lap = now
	}
	if err := env.Catalog.Freeze(ctx, st, m.Range.Lo, m); err != nil {
		return res, fmt.Errorf("cutover %s: freeze: %w", m.ID, err)
	}
	mark("freeze")
	var tasks []*task
	spawn := func(f func() error) *task {
		t := startTask(opts.Now, f)
		tasks = append(tasks, t)
		return t
	}
	fail := func(step string, cause error) (Result, error) {
		// Nothing may still use the connections, nor m, while the cutover is undone.
		for _, t := range tasks {
			_ = t.wait()
		}
		cause = fmt.Errorf("cutover %s: %s: %w", m.ID, step, cause)
		if uerr := Undo(context.WithoutCancel(ctx), env, m); uerr != nil {
			return res, fmt.Errorf("%w; undoing the cutover failed too, the range stays fenced (re-run to finish or roll back): %v", cause, uerr)
		}
		return res, cause
	}
	// 2. Fence.
	if err := env.MayWrite(); err != nil {
		return fail("fence", err)
	}
	if err := SetFence(ctx, env.Source, m.ID, m.Range, env.Tables, env.Token()); err != nil {
		return fail("fence", err)
	}
	mark("fence")
	// 3. Drain transactions that may not see the fence. The first poll, sent after the
	// fence committed, also reads the fence time.
	if _, res.Stragglers, err = drain(ctx, env.Source, time.Time{}, opts.StragglerTimeout, opts.KillStragglers); err != nil {
		return fail("drain", err)
	}
	mark("drain")
	// 4. Everything the source accepted is before the fence LSN; wait until it is applied.
	if res.FenceLSN, err = FenceLSN(ctx, env.Source, m.ID); err != nil {
		return fail("fence LSN", err)
	}
	m.FenceLSN = res.FenceLSN.String()
	m.Phase = catalog.PhaseVerifying
	// Meanwhile: the journal (and the state the flip compares against: the journal write
	// moves the migration's revision), the sequences on the control connections, and the
	// source's digests, final since the drain. m belongs to the journal task until joined.
	var flipState *catalog.State
	r := m.Range
	journal := spawn(func() error {
		if err := env.Catalog.PutMigration(ctx, m); err != nil {
			return err
		}
		var err error
		flipState, err = env.Catalog.Load(ctx)
		return err
	})
	seqs := spawn(func() (err error) {
		res.Sequences, err = SyncSequences(ctx, env.Source, env.Target, env.Tables)
		return err
	})
	var srcDigests, dstDigests []TableDigest
	var srcHalf *task
	if !opts.SkipVerify {
		srcHalf = spawn(func() (err error) {
			conns := srcMore
			if len(conns) == 0 {
				_ = seqs.wait() // the control connection is free once the sequences are done
				conns = []Querier{env.Source}
			}
			srcDigests, err = digests(ctx, conns, env.Key, env.Tables, cols, r)
			return err
		})
	}
	wctx, cancel := context.WithTimeout(ctx, opts.CatchupTimeout)
	err = env.Mover.WaitApplied(wctx, res.FenceLSN)
	cancel()
	if err != nil {
		return fail("catch up to the fence LSN "+res.FenceLSN.String(), err)
	}
	mark("catch up")
	// Nothing reaches the target's copy of the range any more: the source is fenced and
	// drained, the mover has applied up to the fence, and its publication carries the
	// range's rows only. The apply is stopped after the flip, outside the window (its
	// connections closing would take CPU from the verify), and before Run returns, so
	// before the caller deletes the range from the source (those deletes must not be
	// applied to the target).
	// 5. Verify.
	var v Verification
	var verr error
	if !opts.SkipVerify {
		conns := dstMore
		if len(conns) == 0 {
			_ = seqs.wait() // the control connection is free once the sequences are done
			conns = []Querier{env.Target}
		}
		dstDigests, verr = digests(ctx, conns, env.Key, env.Tables, cols, r)
		if verr != nil {
			verr = fmt.Errorf("target: %w", verr)
		}
		if serr := srcHalf.wait(); serr != nil && verr == nil {
			verr = fmt.Errorf("source: %w", serr)
		}
		if verr == nil {
			v, verr = compare(r, srcDigests, dstDigests)
		}
	}
	for _, t := range tasks {
		_ = t.wait()
	}
	seqErr := seqs.err
	verifyTook := opts.Now().Sub(lap)
	lap = opts.Now()
	switch {
	case journal.err != nil:
		return fail("journal", journal.err)
	case seqErr != nil:
		return fail("sequences", seqErr)
	case verr != nil:
		return fail("verify", verr)
	}
	if !opts.SkipVerify {
		res.Rows = v.Rows
		m.RowsVerified = v.Rows
		step("verify", verifyTook)
	}
	// 6. Sequences (done above, during the catch-up).
	step("sequences", seqs.took)
	lap = opts.Now()
	// 7. Flip.
	m.Timings.CutoverWindow = opts.Now().Sub(start).Seconds()
	if err := env.Catalog.Flip(ctx, flipState, m.Range.Lo, m, m.Target); err != nil {
		if err := flipFailed(ctx, env, m, err); err != nil {
			return res, err
		}
		// It did commit; only its answer was lost.
	}
	mark("flip")
	// 8a. The target takes writes for the range from now on: its incoming fence and any
	// tombstone for the range's keys go. A failure here is not the cutover's (it has
	// flipped): the caller's cleanup opens the range again first thing.
	if err := OpenRange(ctx, env.Target, m.ID, m.Range); err == nil {
		mark("open")
	}
	res.Window = opts.Now().Sub(start)
	m.Timings.CutoverWindow = res.Window.Seconds()
	// The range is the target's now; whether the apply stopped cleanly changes nothing
	// there (the caller's DropReplication halts it again before any delete).
	_ = env.Mover.Stop(ctx)
	mark("stop apply")
	return res, nil
}

// task is a step of the cutover that runs beside others.
type task struct {
	done chan struct{}
	err  error
	took time.Duration
}

func startTask(now func() time.Time, f func() error) *task {
	t := &task{done: make(chan struct{})}
	go func() {
		defer close(t.done)
		start := now()
		t.err = f()
		t.took = now().Sub(start)
	}()
	return t
}

func (t *task) wait() error {
	<-t.done
	return t.err
}

// verifyConns are the extra connections of a verify, per side.
type verifyConns struct {
	src, dst []Querier
	all      []*pgx.Conn
}

// openVerifyConns opens n extra connections to each shard, on which the verify hashes the
// tables while the control connections sync the sequences.
func openVerifyConns(ctx context.Context, env Env, n int) *verifyConns {
	var src, dst []*pgx.Conn
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); src = extraConns(ctx, env.Source, n) }()
	go func() { defer wg.Done(); dst = extraConns(ctx, env.Target, n) }()
	wg.Wait()
	vc := &verifyConns{}
	for _, c := range src {
		vc.src = append(vc.src, c)
	}
	for _, c := range dst {
		vc.dst = append(vc.dst, c)
	}
	vc.all = append(src, dst...)
	return vc
}

func (vc *verifyConns) close(ctx context.Context) {
	for _, c := range vc.all {
		c.Close(ctx)
	}
}

// warmUp runs, before the freeze, a harmless version of each statement the window will
// send on each connection (the drain's poll, the sequences and the tombstones on the
// control connections, the digests on the extra ones): the first statement of a backend on a set of tables or
// views loads their catalog entries, which on a busy shard costs tens of milliseconds.
func warmUp(ctx context.Context, env Env, srcMore, dstMore []Querier, cols Columns, r catalog.KeyRange) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		_, _, _ = stragglers(ctx, env.Source, time.Now())
		_, _ = guardMissing(ctx, env.Source, env.Tables) // the fence's check reads the same catalogs
		warmSequences(ctx, env.Source, env.Target, env.Tables)
	}()
	go func() { defer wg.Done(); warmDigests(ctx, srcMore, env.Key, env.Tables, cols, r) }()
	go func() { defer wg.Done(); warmDigests(ctx, dstMore, env.Key, env.Tables, cols, r) }()
	wg.Wait()
}

// catchUpBefore brings the mover up to the source's present right before the freeze. The
// migration's executor starts a cutover once the lag is under a bound (a MiB by default),
// and the WAL sender of a busy source runs some way behind its WAL: without this,
// decoding that backlog would be part of the window. A marker written now and applied
// leaves the catch-up inside the window only the WAL written during its first steps. The
// range still serves meanwhile. It returns how long it took.
func catchUpBefore(ctx context.Context, env Env, id string, bound time.Duration) (time.Duration, error) {
	start := time.Now()
	lsn, err := marker(ctx, env.Source, "catch up "+id)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if err := env.Mover.WaitApplied(wctx, lsn); err != nil {
		return time.Since(start), fmt.Errorf("catch up to %s before the freeze: %w", lsn, err)
	}
	return time.Since(start), nil
}

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
	st, err := env.Catalog.Load(ctx)
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
