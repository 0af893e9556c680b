package migrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// ApplyOptions tune an apply of a plan.
type ApplyOptions struct {
	// Parallel is how many moves run at once (below 1: one); never two that share a shard.
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
	// Migrations are the moves this apply ran, as each ended (moved or not).
	Migrations []*catalog.Migration
	// Elapsed is the apply's time from its first split to its last move.
	Elapsed time.Duration
}

// ApplyPlan carries out plan: its splits, in order, then its moves (each a migration with
// the id <plan id>_<step>), at most opts.Parallel at once and never two on one shard. A
// re-run of the same plan resumes: splits and moves already done are skipped, moves that
// started are resumed. Before the first write it refuses a stale plan (ErrStalePlan: a
// range it touches changed since it was made) and any new move that CheckMove refuses,
// and takes the plan's own lock, so that two applies of one plan never run at once.
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
	lock, err := e.Lock(ctx, "apply_"+plan.ID)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w (another reshard apply runs it; wait for it, or watch it with reshard status)", plan.ID, err)
	}
	defer func() { _ = lock.Unlock(context.WithoutCancel(ctx)) }()
	// Read again under the lock: another apply of the plan may have moved it on.
	if st, err = e.Catalog.Load(ctx); err != nil {
		return nil, err
	}
	if err := p.check(ctx, st); err != nil {
		return nil, err
	}
	if opts.Approve != nil {
		if err := opts.Approve(); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if err := p.splits(ctx, st, opts.Split); err != nil {
		return nil, err
	}
	a := &applier{planRun: p, opts: opts}
	err = a.moves(ctx)
	return &Applied{Migrations: a.results, Elapsed: time.Since(start)}, err
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

// applier runs a plan's moves.
type applier struct {
	planRun
	opts ApplyOptions

	mu      sync.Mutex // serialises opts.Moved
	results []*catalog.Migration
}

// moves runs the moves in plan order, at most opts.Parallel at once and never two that
// share a shard, so each shard's copy and cutover get its full connection budget.
func (a *applier) moves(ctx context.Context) error {
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		busy     = map[string]bool{}
		running  int
		firstErr error
		wg       sync.WaitGroup
	)
	parallel := max(a.opts.Parallel, 1)
	var pending []planner.Step
	for _, s := range a.plan.Steps {
		if s.Kind == planner.StepMove {
			pending = append(pending, s)
		}
	}
	mu.Lock()
	for len(pending) > 0 && firstErr == nil && ctx.Err() == nil {
		idx := -1
		if running < parallel {
			for i, s := range pending {
				if !busy[s.From] && !busy[s.To] {
					idx = i
					break
				}
			}
		}
		if idx < 0 {
			cond.Wait()
			continue
		}
		s := pending[idx]
		pending = append(pending[:idx], pending[idx+1:]...)
		busy[s.From], busy[s.To] = true, true
		running++
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := a.move(ctx, s)
			mu.Lock()
			defer mu.Unlock()
			busy[s.From], busy[s.To] = false, false
			running--
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("step %d (move %s %s -> %s): %w", s.N, s.Range, s.From, s.To, err)
			}
			if m != nil {
				a.results = append(a.results, m)
			}
			cond.Broadcast()
		}()
	}
	mu.Unlock()
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("%w; fix the cause and re-run the same apply to resume", firstErr)
	}
	return ctx.Err()
}

func (a *applier) move(ctx context.Context, s planner.Step) (*catalog.Migration, error) {
	m, err := a.e.Move(ctx, MoveRequest{ID: a.migrationID(s), Range: s.Range, Target: s.To, Plan: a.plan.ID})
	if err == nil && m != nil && a.opts.Moved != nil {
		a.mu.Lock()
		a.opts.Moved(s, m)
		a.mu.Unlock()
	}
	return m, err
}
