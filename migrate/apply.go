package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// ApplyOptions tune an apply of a plan.
type ApplyOptions struct {
	// Parallel is how many moves this driver runs at once (below 1: one); never two that
	// share a shard, whichever driver runs them.
	Parallel int
	// Approve, if set, is called once the plan has been checked under its lock, before
	// the first write (the approval prompt): an error stops the apply, nothing changed.
	Approve func() error
	// Split, if set, is called after each split step is made.
	Split func(s planner.Step)
	// Moved, if set, is called after each move step is done, one call at a time.
	Moved func(s planner.Step, m *catalog.Migration)
}

// Applied is what an apply of a plan did once its moves started.
type Applied struct {
	// Migrations are the moves this driver finished, as each ended.
	Migrations []*catalog.Migration
	// Plan is every move of the plan that started, in plan order, as its journal says at
	// the end, whichever driver ran it.
	Plan []*catalog.Migration
	// Elapsed is the apply's time from its first split to its last move.
	Elapsed time.Duration
}

// ApplyPlan carries out plan: its splits, in order, then its moves (each a migration with
// the id <plan id>_<step>), at most opts.Parallel at once by this driver and never two on
// one shard. A re-run of the same plan resumes: splits and moves already done are skipped,
// moves that started are resumed. Before the first write it refuses a stale plan
// (ErrStalePlan: a range it touches changed since it was made) and any new move that
// CheckMove refuses.
//
// Several drivers (processes, on several hosts) may apply one plan at once and share its
// steps through etcd: the splits are made under the plan's lock by whichever driver takes
// it first (the others wait for it, then find them made), and each move is claimed under
// its migration's lease lock together with the move slot of both its shards (see
// catalog.ClaimSlots), so the one-move-per-shard limit holds across all drivers. A step
// whose driver died is claimed again once that driver's lease expires and resumed from its
// journal. A driver that finds nothing to claim waits for the others and returns once every
// move is done.
//
// It returns nil Applied when it stopped before the moves (nothing moved); once the moves
// started, Applied says what they did, also with an error.
func (e *Executor) ApplyPlan(ctx context.Context, plan *planner.Plan, opts ApplyOptions) (*Applied, error) {
	if e.Lock == nil {
		return nil, errors.New("executor: no Lock: a plan is applied only under its lease lock")
	}
	p := planRun{e: e, plan: plan}
	// Everything that can refuse the plan, before the first write (the lock).
	st, err := e.Catalog.Load(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.check(ctx, st); err != nil {
		return nil, err
	}
	if err := p.precheck(ctx, st); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := p.prepare(ctx, opts); err != nil {
		return nil, err
	}
	a := &applier{planRun: p, opts: opts}
	err = a.moves(ctx)
	return a.outcome(ctx, start), err
}

// prepare checks the plan again and makes its splits under the plan's lock, waiting while
// another driver of the plan holds it (it makes them, or asks its approval).
func (p planRun) prepare(ctx context.Context, opts ApplyOptions) error {
	lock, err := p.lockPlan(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Unlock(context.WithoutCancel(ctx)) }()
	// Read again under the lock: another driver of the plan may have moved it on.
	st, err := p.e.Catalog.Load(ctx)
	if err != nil {
		return err
	}
	if err := p.check(ctx, st); err != nil {
		return err
	}
	if opts.Approve != nil {
		if err := opts.Approve(); err != nil {
			return err
		}
	}
	return p.splits(ctx, st, opts.Split)
}

// lockPlan takes the plan's lock, polling while another driver of the plan holds it.
func (p planRun) lockPlan(ctx context.Context) (*catalog.Lock, error) {
	for {
		lock, err := p.e.Lock(ctx, "apply_"+p.plan.ID)
		if !errors.Is(err, catalog.ErrLocked) {
			if err != nil {
				return nil, fmt.Errorf("plan %s: %w", p.plan.ID, err)
			}
			return lock, nil
		}
		p.e.log().Info("another driver of the plan holds its lock (splitting, or asking for approval); waiting", "plan", p.plan.ID, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("plan %s: %w (while waiting for another driver of the plan: %w)", p.plan.ID, ctx.Err(), err)
		case <-time.After(pollEvery):
		}
	}
}

// splits makes the plan's splits that are not made yet, in order: they change only the
// catalog.
func (p planRun) splits(ctx context.Context, st *catalog.State, done func(planner.Step)) error {
	for _, s := range p.plan.Steps {
		if s.Kind != planner.StepSplit || splitDone(st, s) {
			continue
		}
		lo := s.Range.Lo
		for _, at := range s.At {
			if r, ok := st.Owner(at); ok && r.Range.Lo == at {
				lo = at
				continue
			}
			if err := p.e.Catalog.Split(ctx, st, lo, at); err != nil {
				return fmt.Errorf("step %d: split %s at %d: %w", s.N, s.Range, at, err)
			}
			lo = at
		}
		if done != nil {
			done(s)
		}
	}
	return nil
}
