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

// pollEvery is how often a driver with nothing to claim looks at the plan again: a step's
// end, or a dead driver's lease expiring, makes a step claimable. A driver ending its own
// step looks at once.
const pollEvery = 500 * time.Millisecond

// errStepEnded: the step was finished by another driver between the read and the claim.
var errStepEnded = errors.New("the step is finished")

// applier runs a plan's moves beside the plan's other drivers.
type applier struct {
	planRun
	opts ApplyOptions

	mu      sync.Mutex // guards the fields below; serialises opts.Moved
	mine    map[int]bool
	busy    map[string]bool // shards of the steps this driver runs
	ownErr  error           // the first failure of this driver: it claims nothing more
	results []*catalog.Migration
	wake    chan struct{}
}

// moves claims and runs the plan's unfinished moves, at most opts.Parallel at once and
// never one whose shard runs a move of any driver (the shards' slots), until every move of
// the plan is done, this driver fails, or ctx ends. It waits for its own moves to end.
func (a *applier) moves(ctx context.Context) error {
	a.mine, a.busy, a.wake = map[int]bool{}, map[string]bool{}, make(chan struct{}, 1)
	var wg sync.WaitGroup
	for {
		pending, err := a.pending(ctx)
		a.mu.Lock()
		if err != nil && a.ownErr == nil {
			a.ownErr = err
		}
		if a.ownErr != nil || ctx.Err() != nil || (len(pending) == 0 && len(a.mine) == 0) {
			a.mu.Unlock()
			break
		}
		a.claimSome(ctx, pending, &wg)
		a.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-a.wake:
		case <-time.After(pollEvery):
		}
	}
	wg.Wait()
	if a.ownErr != nil {
		return fmt.Errorf("%w; fix the cause and re-run the same apply to resume", a.ownErr)
	}
	return ctx.Err()
}

// claimSome claims, in plan order, the pending steps this driver has room for, and runs
// each it claims. Called with a.mu held.
func (a *applier) claimSome(ctx context.Context, pending []planner.Step, wg *sync.WaitGroup) {
	// One read of the slots spares a lock taken and released for each step whose shard
	// another driver's move holds; a claim still compares them (this is only a hint).
	taken, err := a.e.Catalog.SlotHolders(ctx)
	if err != nil {
		taken = nil
	}
	for _, s := range pending {
		if len(a.mine) >= max(a.opts.Parallel, 1) {
			return
		}
		if a.mine[s.N] || a.busy[s.From] || a.busy[s.To] || taken[s.From] != "" || taken[s.To] != "" {
			continue
		}
		lock, err := a.claim(ctx, s)
		if errors.Is(err, catalog.ErrLocked) || errors.Is(err, catalog.ErrSlotBusy) || errors.Is(err, errStepEnded) {
			continue // another driver runs it or one of its shards: look again later
		}
		if err != nil {
			a.ownErr = fmt.Errorf("step %d (move %s %s -> %s): claim: %w", s.N, s.Range, s.From, s.To, err)
			return
		}
		a.mine[s.N], a.busy[s.From], a.busy[s.To] = true, true, true
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.run(ctx, s, lock)
		}()
	}
}

// claim takes step s: its migration's lock (errors.Is ErrLocked when another driver holds
// it), then, if the step is still unfinished, the move slots of its two shards on the
// lock's lease (ErrSlotBusy when another move holds one). The slots go with the lock.
func (a *applier) claim(ctx context.Context, s planner.Step) (*catalog.Lock, error) {
	id := a.migrationID(s)
	lock, err := a.e.Lock(ctx, id)
	if err != nil {
		return nil, err
	}
	release := func() { _ = lock.Unlock(context.WithoutCancel(ctx)) }
	from, to := s.From, s.To
	m, err := a.e.Catalog.GetMigration(ctx, id)
	switch {
	case err == nil && a.complete(m):
		release()
		return nil, errStepEnded
	case err == nil:
		from, to = m.Source, m.Target
	case !errors.Is(err, catalog.ErrNotFound):
		release()
		return nil, err
	}
	if err := a.e.Catalog.ClaimSlots(ctx, lock, id, from, to); err != nil {
		release()
		return nil, err
	}
	return lock, nil
}

// run drives claimed step s to its end under lock (released when the move ends). A move
// interrupted because its lock was lost is no failure of the plan: the driver that took
// the step over carries on with it.
func (a *applier) run(ctx context.Context, s planner.Step, lock *catalog.Lock) {
	ex := *a.e
	ex.Lock = func(context.Context, string) (*catalog.Lock, error) { return lock, nil }
	m, err := ex.Move(ctx, MoveRequest{ID: a.migrationID(s), Range: s.Range, Target: s.To, Plan: a.plan.ID})
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.mine, s.N)
	a.busy[s.From], a.busy[s.To] = false, false
	switch {
	case errors.Is(err, errInterrupted):
		a.e.log().Warn("step taken over by another driver (this one lost its lock)", "step", s.N, "migration", a.migrationID(s), "err", err)
	case err != nil && a.ownErr == nil:
		a.ownErr = fmt.Errorf("step %d (move %s %s -> %s): %w", s.N, s.Range, s.From, s.To, err)
	}
	if m != nil && err == nil {
		a.results = append(a.results, m)
		if a.opts.Moved != nil {
			a.opts.Moved(s, m)
		}
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// complete reports whether a move step's migration needs no more work from a driver: done,
// or cleaned up as far as this driver's options go (with CleanupLater, the rows are left
// for `reshard cleanup`).
func (a *applier) complete(m *catalog.Migration) bool {
	return m.Phase == catalog.PhaseDone || (a.e.Options.CleanupLater && m.Phase == catalog.PhaseCleaningUp)
}

// pending lists the plan's moves that are not complete, in plan order. A move that ended
// without moving (rolled back or cancelled, by any driver) fails the plan: it can never
// complete.
func (a *applier) pending(ctx context.Context) ([]planner.Step, error) {
	byID, err := a.journals(ctx)
	if err != nil {
		return nil, err
	}
	var out []planner.Step
	for _, s := range a.plan.Steps {
		if s.Kind != planner.StepMove {
			continue
		}
		m, ok := byID[a.migrationID(s)]
		switch {
		case !ok:
			out = append(out, s)
		case a.complete(m):
		case m.Terminal():
			return nil, fmt.Errorf("step %d (move %s %s -> %s): %w; this plan cannot finish: re-plan (reshard plan --out FILE) and apply the new plan",
				s.N, s.Range, s.From, s.To, EndedUnmoved(m))
		default:
			out = append(out, s)
		}
	}
	return out, nil
}

// journals are the plan's migrations by id.
func (a *applier) journals(ctx context.Context) (map[string]*catalog.Migration, error) {
	ms, err := a.e.Catalog.ListMigrations(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*catalog.Migration{}
	for i := range ms {
		if ms[i].Plan == a.plan.ID {
			byID[ms[i].ID] = &ms[i]
		}
	}
	return byID, nil
}

// outcome is what the apply did: this driver's moves, and every move of the plan as its
// journal says now (whichever driver ran it).
func (a *applier) outcome(ctx context.Context, start time.Time) *Applied {
	out := &Applied{Migrations: a.results, Elapsed: time.Since(start)}
	byID, err := a.journals(context.WithoutCancel(ctx))
	if err != nil {
		return out
	}
	for _, s := range a.plan.Steps {
		if m, ok := byID[a.migrationID(s)]; ok && s.Kind == planner.StepMove {
			out.Plan = append(out.Plan, m)
		}
	}
	return out
}
