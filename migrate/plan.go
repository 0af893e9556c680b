package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// ErrStalePlan is returned for a plan whose ranges changed since it was made.
var ErrStalePlan = errors.New("the plan is stale: the catalog changed since it was made; re-plan with `reshard plan --out FILE`")

// planRun is one apply of a plan: what it reads of the plan and the catalog.
type planRun struct {
	e    *Executor
	plan *planner.Plan
}

// migrationID is the id of a move step's migration: <plan id>_<step>, so that a re-run
// of the plan finds the moves it started.
func (p planRun) migrationID(s planner.Step) string { return fmt.Sprintf("%s_%d", p.plan.ID, s.N) }

// started reports whether an earlier apply of this plan did anything.
func (p planRun) started(ctx context.Context, st *catalog.State) (bool, error) {
	ms, err := p.e.Catalog.ListMigrations(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Plan == p.plan.ID {
			return true, nil
		}
	}
	for _, s := range p.plan.Steps {
		if s.Kind == planner.StepSplit && splitDone(st, s) {
			return true, nil
		}
	}
	return false, nil
}

func splitDone(st *catalog.State, s planner.Step) bool {
	for _, part := range s.Parts {
		r, ok := st.Owner(part.Lo)
		if !ok || r.Range.Lo != part.Lo {
			return false
		}
	}
	return true
}

// check refuses a stale plan: before any step ran, every touched range must have the
// revision the plan recorded; when resuming, every pending step must still make sense.
func (p planRun) check(ctx context.Context, st *catalog.State) error {
	started, err := p.started(ctx, st)
	if err != nil {
		return err
	}
	if !started {
		for _, rr := range p.plan.Ranges {
			if rr.ModRevision == 0 {
				continue
			}
			if cur := st.ModRev[rr.Key]; cur != rr.ModRevision {
				return fmt.Errorf("%w (range %s was at revision %d, now %d)", ErrStalePlan, rr.Range, rr.ModRevision, cur)
			}
		}
		return nil
	}
	for _, s := range p.plan.Steps {
		switch s.Kind {
		case planner.StepSplit:
			if splitDone(st, s) {
				continue
			}
			if r, ok := st.Owner(s.Range.Lo); !ok || !r.Range.Covers(s.Range) || r.Shard != s.From {
				return fmt.Errorf("%w (step %d splits %s on %s, which no longer holds it)", ErrStalePlan, s.N, s.Range, s.From)
			}
		case planner.StepMove:
			if _, err := p.e.Catalog.GetMigration(ctx, p.migrationID(s)); err == nil {
				continue
			}
			r, ok := st.Owner(s.Range.Lo)
			if !ok || r.Shard != s.From || (!r.Range.Equal(s.Range) && !p.fromSplit(s)) {
				return fmt.Errorf("%w (step %d moves %s from %s, which no longer holds it)", ErrStalePlan, s.N, s.Range, s.From)
			}
		}
	}
	return nil
}

// precheck checks each move of the plan that has not started (CheckMove), and that none
// that started ended without moving, reading only.
func (p planRun) precheck(ctx context.Context, st *catalog.State) error {
	for _, s := range p.plan.Steps {
		if s.Kind != planner.StepMove {
			continue
		}
		m, err := p.e.Catalog.GetMigration(ctx, p.migrationID(s))
		if err == nil {
			// Started: a re-run resumes it, unless it ended without moving.
			if err := EndedUnmoved(m); err != nil {
				return fmt.Errorf("step %d (move %s %s -> %s): %w; this plan cannot move it again: re-plan (reshard plan --out FILE) and apply the new plan", s.N, s.Range, s.From, s.To, err)
			}
			continue
		}
		if !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		if err := p.e.CheckMove(ctx, st, s.Range, s.To, p.migrationID(s)); err != nil {
			// Another driver of the plan may have started it meanwhile (its journal, its
			// copy on the target are what CheckMove refused): then it is resumed, not new.
			if _, gerr := p.e.Catalog.GetMigration(ctx, p.migrationID(s)); gerr == nil {
				continue
			}
			return fmt.Errorf("step %d (move %s %s -> %s): %w", s.N, s.Range, s.From, s.To, err)
		}
	}
	return nil
}

// fromSplit reports whether a move's range is the part of a split step of the plan.
func (p planRun) fromSplit(m planner.Step) bool {
	for _, s := range p.plan.Steps {
		if s.Kind != planner.StepSplit {
			continue
		}
		for _, part := range s.Parts {
			if part.Equal(m.Range) {
				return true
			}
		}
	}
	return false
}
