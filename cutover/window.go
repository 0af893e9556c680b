package cutover

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// window is one run of the cutover of migration m: what it works on, its clock, the
// tasks it runs beside its steps, and its result so far. Each step of Run is a method.
type window struct {
	ctx  context.Context
	env  Env
	m    *catalog.Migration
	r    catalog.KeyRange // m's range, for the tasks: m belongs to the journal task while it runs
	opts Options
	res  Result

	// The verify's lanes: the columns read before the freeze and the extra connections
	// per shard (none with SkipVerify, or when they could not be opened).
	cols             Columns
	lanes            *verifyConns
	srcMore, dstMore []Querier

	// The online verification: the mover that holds and records its apply (nil: the
	// window hashes the whole range), what both sides hash, and the column types of the
	// changed rows' keys.
	holder ApplyHolder
	plan   *onlinePlan
	types  columnTypes

	// start is the freeze; lap the end of the last step timed.
	start, lap time.Time
	// tasks are every task spawned; the ones of step 4 by name.
	tasks                  []*task
	journal, seqs, srcHalf *task
	// flipState is the state the flip compares against: the range as the freeze wrote it
	// (a change of the range since fails the flip; the migration's revision is m's own,
	// which the journal write moves). srcDigests are what the source half of the verify
	// leaves.
	flipState  *catalog.State
	srcDigests []TableDigest
}

// prepare is what comes before the window: the catalog read, the verify's columns and
// lanes opened and every statement of the window warmed up on its connection, and the
// mover caught up to the source's present. The range still serves meanwhile.
func (w *window) prepare() (*catalog.State, error) {
	ctx, env, m := w.ctx, w.env, w.m
	var err error
	if !w.opts.SkipVerify {
		// Read before the freeze, so the verify in the window stays one statement per lane.
		if w.cols, err = ReadColumns(ctx, env.Source, env.Tables); err != nil {
			return nil, fmt.Errorf("cutover %s: source: %w", m.ID, err)
		}
		if h, ok := env.Mover.(ApplyHolder); ok {
			if err := w.verifyOnline(h); err != nil {
				return nil, fmt.Errorf("cutover %s: online verify: %w", m.ID, err)
			}
		}
		w.lanes = openVerifyConns(ctx, env, min(w.opts.VerifyConns, len(env.Tables)))
		w.srcMore, w.dstMore = w.lanes.src, w.lanes.dst
	}
	warmUp(ctx, env, w.srcMore, w.dstMore, w.cols, m.Range)
	w.warmChanged()
	if err := w.settle(); err != nil {
		return nil, fmt.Errorf("cutover %s: %w", m.ID, err)
	}
	// Read last (the online verify takes a while, settle may write the journal): the
	// freeze compares it, and the flip what the freeze leaves of it.
	st, err := env.Catalog.LoadRange(ctx, m.Range.Lo, m.Source, m.Target)
	if err != nil {
		return nil, fmt.Errorf("cutover %s: %w", m.ID, err)
	}
	return st, nil
}

func (w *window) closeLanes() {
	if w.lanes != nil {
		w.lanes.close(context.WithoutCancel(w.ctx))
	}
}

// step records that a step of the window took d, and tells opts.AfterStep.
func (w *window) step(name string, d time.Duration) {
	w.res.Steps = append(w.res.Steps, StepTiming{Step: name, Duration: d})
	if w.opts.AfterStep != nil {
		w.opts.AfterStep(name)
	}
}

// mark records that a step ended now, having run since the last one ended.
func (w *window) mark(name string) {
	now := w.opts.Now()
	w.step(name, now.Sub(w.lap))
	w.lap = now
}

// spawn runs f beside the steps, as a task every failure waits for.
func (w *window) spawn(f func() error) *task {
	t := startTask(w.opts.Now, f)
	w.tasks = append(w.tasks, t)
	return t
}

// fail undoes the cutover after step failed with cause, and returns the cause.
func (w *window) fail(step string, cause error) (Result, error) {
	// Nothing may still use the connections, nor m, while the cutover is undone.
	for _, t := range w.tasks {
		_ = t.wait()
	}
	cause = fmt.Errorf("cutover %s: %s: %w", w.m.ID, step, cause)
	if uerr := Undo(context.WithoutCancel(w.ctx), w.env, w.m); uerr != nil {
		return w.res, fmt.Errorf("%w; undoing the cutover failed too, the range stays fenced (re-run to finish or roll back): %v", cause, uerr)
	}
	return w.res, cause
}

// freeze is step 1: the catalog range goes serving -> frozen, with the journal, in one
// transaction; routers hold writes for it. The window starts here.
func (w *window) freeze(st *catalog.State) error {
	w.start = w.opts.Now()
	w.lap = w.start
	if err := w.env.Catalog.Freeze(w.ctx, st, w.m.Range.Lo, w.m); err != nil {
		return fmt.Errorf("cutover %s: freeze: %w", w.m.ID, err)
	}
	w.flipState = st
	w.mark("freeze")
	return nil
}

// fence is step 2: the fence row on the source, with this driver's token; the guard
// trigger refuses writes to the range from its commit on.
func (w *window) fence() error {
	if err := w.env.MayWrite(); err != nil {
		return err
	}
	if err := SetFence(w.ctx, w.env.Source, w.m.ID, w.m.Range, w.env.Tables, w.env.Token()); err != nil {
		return err
	}
	w.mark("fence")
	return nil
}

// drain is step 3: wait, bounded, for the transactions that started before the fence and
// may not see it. The first poll, sent after the fence committed, also reads the fence
// time.
func (w *window) drain() error {
	var err error
	if _, w.res.Stragglers, err = drain(w.ctx, w.env.Source, time.Time{}, w.opts.StragglerTimeout, w.opts.KillStragglers); err != nil {
		return err
	}
	w.mark("drain")
	return nil
}

// catchUp is step 4: everything the source accepted is before the fence LSN; wait until
// the mover has applied it. Meanwhile, as tasks: the journal (phase verifying, with the
// fence LSN: the write moves m's revision, which the flip compares; nothing else of the
// catalog is read again), the sequences on the control connections, and the source's
// digests, final since the drain. m belongs to the journal task until it is joined. On
// failure it returns the step's name for the error.
func (w *window) catchUp() (string, error) {
	ctx, env, m := w.ctx, w.env, w.m
	var err error
	if w.res.FenceLSN, err = FenceLSN(ctx, env.Source, m.ID); err != nil {
		return "fence LSN", err
	}
	m.FenceLSN = w.res.FenceLSN.String()
	m.Phase = catalog.PhaseVerifying
	w.journal = w.spawn(func() error { return env.Catalog.PutMigration(ctx, m) })
	w.seqs = w.spawn(func() (err error) {
		w.res.Sequences, err = SyncSequences(ctx, env.Source, env.Target, env.Tables)
		return err
	})
	if !w.opts.SkipVerify && w.holder == nil {
		w.srcHalf = w.spawn(func() (err error) {
			w.srcDigests, err = digests(ctx, w.lane(w.srcMore, env.Source), env.Keyspace(), env.Tables, w.cols, w.r)
			return err
		})
	}
	wctx, cancel := context.WithTimeout(ctx, w.opts.CatchupTimeout)
	err = env.Mover.WaitApplied(wctx, w.res.FenceLSN)
	cancel()
	if err != nil {
		return "catch up to the fence LSN " + w.res.FenceLSN.String(), err
	}
	w.mark("catch up")
	// Nothing reaches the target's copy of the range any more: the source is fenced and
	// drained, the mover has applied up to the fence, and its publication carries the
	// range's rows only. The apply is stopped after the flip, outside the window (its
	// connections closing would take CPU from the verify), and before Run returns, so
	// before the caller deletes the range from the source (those deletes must not be
	// applied to the target).
	return "", nil
}

// lane is the connections a half of the verify hashes on: the extra ones, or else the
// control connection, free once the sequences are done.
func (w *window) lane(more []Querier, control Querier) []Querier {
	if len(more) > 0 {
		return more
	}
	_ = w.seqs.wait()
	return []Querier{control}
}

// verify is step 5: the target's digests, compared with the source's; then every task
// is joined, and the first failure of the journal, the sequences or the verify, in that
// order, is returned with its step's name.
func (w *window) verify() (string, error) {
	var v Verification
	var verr error
	switch {
	case w.opts.SkipVerify:
	case w.holder != nil:
		v, verr = w.verifyChanged()
	default:
		var dstDigests []TableDigest
		dstDigests, verr = digests(w.ctx, w.lane(w.dstMore, w.env.Target), w.env.Keyspace(), w.env.Tables, w.cols, w.r)
		if verr != nil {
			verr = fmt.Errorf("target: %w", verr)
		}
		if serr := w.srcHalf.wait(); serr != nil && verr == nil {
			verr = fmt.Errorf("source: %w", serr)
		}
		if verr == nil {
			v, verr = compare(w.r, w.srcDigests, dstDigests)
		}
		w.res.WindowRows = v.Rows
	}
	for _, t := range w.tasks {
		_ = t.wait()
	}
	verifyTook := w.opts.Now().Sub(w.lap)
	w.lap = w.opts.Now()
	switch {
	case w.journal.err != nil:
		return "journal", w.journal.err
	case w.seqs.err != nil:
		return "sequences", w.seqs.err
	case verr != nil:
		return "verify", verr
	}
	if !w.opts.SkipVerify {
		w.res.Rows = v.Rows
		w.m.RowsVerified = v.Rows
		if w.res.Online != nil {
			w.res.Rows = w.res.Online.Rows
			w.m.RowsVerified = w.res.Online.Rows
			w.m.Verify.WindowRows, w.m.Verify.ChangedSince = w.res.WindowRows, w.res.ChangedSince
		}
		w.step("verify", verifyTook)
	}
	return "", nil
}

// sequences is step 6, done beside the catch-up: it records how long they took.
func (w *window) sequences() {
	w.step("sequences", w.seqs.took)
	w.lap = w.opts.Now()
}

// flip is step 7, the commit point: one etcd transaction moves the range to the target,
// bumps its epoch and writes the journal. A flip that failed is settled by flipFailed.
func (w *window) flip() error {
	m := w.m
	m.Timings.CutoverWindow = w.opts.Now().Sub(w.start).Seconds()
	m.Timings.Window = journalSteps(w.res.Steps)
	if err := w.env.Catalog.Flip(w.ctx, w.flipState, m.Range.Lo, m, m.Target); err != nil {
		if err := flipFailed(w.ctx, w.env, m, err); err != nil {
			return err
		}
		// It did commit; only its answer was lost.
	}
	w.mark("flip")
	return nil
}

// open is step 8: the target takes writes for the range from now on: its incoming fence
// and any tombstone for the range's keys go. A failure here is not the cutover's (it has
// flipped): the caller's cleanup opens the range again first thing. The window ends here;
// then the apply stops.
func (w *window) open() {
	m := w.m
	if err := OpenRange(w.ctx, w.env.Target, m.ID, m.Range); err == nil {
		w.mark("open")
	}
	w.res.Window = w.opts.Now().Sub(w.start)
	m.Timings.CutoverWindow = w.res.Window.Seconds()
	m.Timings.Window = journalSteps(w.res.Steps)
	// The range is the target's now; whether the apply stopped cleanly changes nothing
	// there (the migration's DropReplication halts it again before any delete).
	_ = w.env.Mover.Stop(w.ctx)
	w.mark("stop apply")
}

// journalSteps are the window's steps as the journal keeps them (catalog.WindowStep):
// "catch up" is "catch-up" there, and stop apply, which ends after the window, is left out.
func journalSteps(steps []StepTiming) []catalog.WindowStep {
	out := make([]catalog.WindowStep, 0, len(steps))
	for _, s := range steps {
		name := s.Step
		switch name {
		case "stop apply":
			continue
		case "catch up":
			name = "catch-up"
		}
		out = append(out, catalog.WindowStep{Step: name, Seconds: s.Duration.Seconds()})
	}
	return out
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
	go func() { defer wg.Done(); warmDigests(ctx, srcMore, env.Keyspace(), env.Tables, cols, r) }()
	go func() { defer wg.Done(); warmDigests(ctx, dstMore, env.Keyspace(), env.Tables, cols, r) }()
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
