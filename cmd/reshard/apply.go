package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/planner"
)

func init() { subcommands = append(subcommands, newApplyCmd) }

// ErrStalePlan is returned for a plan whose ranges changed since it was made.
var ErrStalePlan = errors.New("the plan is stale: the catalog changed since it was made; re-plan with `reshard plan --out FILE`")

func newApplyCmd() *cobra.Command {
	var (
		autoApprove bool
		parallel    int
		f           execFlags
	)
	cmd := &cobra.Command{
		Use:   "apply PLAN.json",
		Short: "Carry out a plan: its splits, then its moves (re-run resumes an interrupted apply)",
		Long: `Runs the steps of a plan written by reshard plan --out. Splits come first (they move no
data); then the moves, up to --parallel at once between disjoint shard pairs. Each move is a
migration with the id <plan id>_<step>; re-running apply on the same plan resumes the moves that
did not finish and skips the ones that did. A plan whose ranges changed since it was made is
refused: re-plan.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := f.check(); err != nil {
				return err
			}
			if parallel < 1 {
				return fmt.Errorf("--parallel %d: use 1 or more", parallel)
			}
			b, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read plan: %w", err)
			}
			p, err := planner.Parse(b)
			if err != nil {
				return err
			}
			if p.Cluster != "" && p.Cluster != globals.cluster {
				return fmt.Errorf("the plan is for cluster %q, not %q: pass --cluster %s", p.Cluster, globals.cluster, p.Cluster)
			}
			out := cmd.OutOrStdout()
			if p.Empty() {
				fmt.Fprintln(out, "the plan has no steps: nothing to do")
				return nil
			}
			return withStore(ctx, func(store *catalog.Store) error {
				a := &applier{store: store, plan: p, flags: &f, parallel: parallel, out: out}
				// Everything that can refuse the plan, before the first write (the lock).
				st, err := store.Load(ctx)
				if err != nil {
					return err
				}
				if err := a.check(ctx, st); err != nil {
					return err
				}
				if err := a.precheck(ctx, st); err != nil {
					return err
				}
				lock, err := store.TryLockMigration(ctx, "apply_"+p.ID, catalog.WithTTL(f.lockTTL))
				if err != nil {
					return fmt.Errorf("plan %s: %w (another reshard apply runs it; wait for it, or watch it with reshard status)", p.ID, err)
				}
				defer func() { _ = lock.Unlock(context.WithoutCancel(ctx)) }()
				// Read again under the lock: another apply of the plan may have moved it on.
				if st, err = store.Load(ctx); err != nil {
					return err
				}
				if err := a.check(ctx, st); err != nil {
					return err
				}
				fmt.Fprint(out, a.describe())
				if !autoApprove {
					if err := confirm(cmd.InOrStdin(), out); err != nil {
						return err
					}
				}
				return a.run(ctx, st)
			})
		},
	}
	cmd.Flags().BoolVar(&autoApprove, "auto-approve", false, "apply without asking for confirmation")
	cmd.Flags().IntVar(&parallel, "parallel", 1, "moves to run at once (never two on the same shard)")
	f.register(cmd)
	return cmd
}

func confirm(in io.Reader, out io.Writer) error {
	if f, ok := in.(*os.File); ok && !isTerminal(f) {
		return errors.New("not applied: standard input is not a terminal, so nobody can confirm; pass --auto-approve")
	}
	fmt.Fprint(out, "Apply this plan? Only 'yes' is accepted: ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		return errors.New("not applied: the answer was not 'yes'")
	}
	return nil
}

type applier struct {
	store    *catalog.Store
	plan     *planner.Plan
	flags    *execFlags
	parallel int
	out      io.Writer

	mu      sync.Mutex
	results []*catalog.Migration
}

func (a *applier) migrationID(s planner.Step) string { return fmt.Sprintf("%s_%d", a.plan.ID, s.N) }

// started reports whether an earlier apply of this plan did anything.
func (a *applier) started(ctx context.Context, st *catalog.State) (bool, error) {
	ms, err := a.store.ListMigrations(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Plan == a.plan.ID {
			return true, nil
		}
	}
	for _, s := range a.plan.Steps {
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
func (a *applier) check(ctx context.Context, st *catalog.State) error {
	started, err := a.started(ctx, st)
	if err != nil {
		return err
	}
	if !started {
		for _, rr := range a.plan.Ranges {
			if rr.ModRevision == 0 {
				continue
			}
			if cur := st.ModRev[rr.Key]; cur != rr.ModRevision {
				return fmt.Errorf("%w (range %s was at revision %d, now %d)", ErrStalePlan, rr.Range, rr.ModRevision, cur)
			}
		}
		return nil
	}
	for _, s := range a.plan.Steps {
		switch s.Kind {
		case planner.StepSplit:
			if splitDone(st, s) {
				continue
			}
			if r, ok := st.Owner(s.Range.Lo); !ok || !r.Range.Covers(s.Range) || r.Shard != s.From {
				return fmt.Errorf("%w (step %d splits %s on %s, which no longer holds it)", ErrStalePlan, s.N, s.Range, s.From)
			}
		case planner.StepMove:
			if _, err := a.store.GetMigration(ctx, a.migrationID(s)); err == nil {
				continue
			}
			r, ok := st.Owner(s.Range.Lo)
			if !ok || r.Shard != s.From || (!r.Range.Equal(s.Range) && !a.fromSplit(s)) {
				return fmt.Errorf("%w (step %d moves %s from %s, which no longer holds it)", ErrStalePlan, s.N, s.Range, s.From)
			}
		}
	}
	return nil
}

// precheck checks each move of the plan that has not started (checkMove), and that none
// that started ended without moving, reading only.
func (a *applier) precheck(ctx context.Context, st *catalog.State) error {
	for _, s := range a.plan.Steps {
		if s.Kind != planner.StepMove {
			continue
		}
		m, err := a.store.GetMigration(ctx, a.migrationID(s))
		if err == nil {
			// Started: a re-run resumes it, unless it ended without moving.
			if err := endedUnmoved(m); err != nil {
				return fmt.Errorf("step %d (move %s %s -> %s): %w; this plan cannot move it again: re-plan (reshard plan --out FILE) and apply the new plan", s.N, s.Range, s.From, s.To, err)
			}
			continue
		}
		if !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		if err := checkMove(ctx, st, s.Range, s.To, a.migrationID(s), a.flags); err != nil {
			return fmt.Errorf("step %d (move %s %s -> %s): %w", s.N, s.Range, s.From, s.To, err)
		}
	}
	return nil
}

// fromSplit reports whether a move's range is the part of a split step of the plan.
func (a *applier) fromSplit(m planner.Step) bool {
	for _, s := range a.plan.Steps {
		if s.Kind != planner.StepSplit {
			continue
		}
		for _, p := range s.Parts {
			if p.Equal(m.Range) {
				return true
			}
		}
	}
	return false
}

func (a *applier) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan %s: %d splits, %d moves, %s to move\n", a.plan.ID, a.plan.Splits, a.plan.Moves, humanBytes(a.plan.BytesToMove))
	for _, s := range a.plan.Steps {
		switch s.Kind {
		case planner.StepSplit:
			fmt.Fprintf(&b, "  %2d. split %s at %v on %s: %s\n", s.N, s.Range, s.At, s.From, s.Reason)
		default:
			fmt.Fprintf(&b, "  %2d. move  %s %s -> %s (%s): %s\n", s.N, s.Range, s.From, s.To, humanBytes(s.Bytes), s.Reason)
		}
	}
	return b.String()
}

func (a *applier) run(ctx context.Context, st *catalog.State) error {
	start := time.Now()
	// Splits first, in order: they only change the catalog.
	for _, s := range a.plan.Steps {
		if s.Kind != planner.StepSplit || splitDone(st, s) {
			continue
		}
		lo := s.Range.Lo
		for _, at := range s.At {
			if r, ok := st.Owner(at); ok && r.Range.Lo == at {
				lo = at
				continue
			}
			if err := a.store.Split(ctx, st, lo, at); err != nil {
				return fmt.Errorf("step %d: split %s at %d: %w", s.N, s.Range, at, err)
			}
			lo = at
		}
		fmt.Fprintf(a.out, "step %d: split %s at %v\n", s.N, s.Range, s.At)
	}
	var moves []planner.Step
	for _, s := range a.plan.Steps {
		if s.Kind == planner.StepMove {
			moves = append(moves, s)
		}
	}
	err := a.runMoves(ctx, st, moves)
	a.summary(time.Since(start))
	return err
}

// runMoves runs the moves in plan order, at most a.parallel at once and never two that
// share a shard, so each shard's copy and cutover get its full connection budget.
func (a *applier) runMoves(ctx context.Context, st *catalog.State, moves []planner.Step) error {
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		busy     = map[string]bool{}
		running  int
		firstErr error
		wg       sync.WaitGroup
	)
	pending := append([]planner.Step(nil), moves...)
	mu.Lock()
	for len(pending) > 0 && firstErr == nil && ctx.Err() == nil {
		idx := -1
		if running < a.parallel {
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
			m, err := a.move(ctx, st, s)
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

func (a *applier) move(ctx context.Context, st *catalog.State, s planner.Step) (*catalog.Migration, error) {
	id := a.migrationID(s)
	var progress = newProgress(os.Stderr, id)
	if a.parallel > 1 {
		progress = nil
	}
	ex := newExecutor(a.store, st, a.flags, progress, newLogger())
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: s.Range, Target: s.To, Plan: a.plan.ID})
	if err == nil && m != nil {
		a.mu.Lock()
		fmt.Fprintf(a.out, "step %d: moved %s %s -> %s: %d rows, %s, cutover window %.1fms\n", s.N, s.Range, s.From, s.To,
			m.RowsCopied, humanBytes(m.BytesCopied), m.Timings.CutoverWindow*1000)
		a.mu.Unlock()
	}
	return m, err
}

func (a *applier) summary(elapsed time.Duration) {
	var rows, verified, bytes int64
	var windows []float64
	done := 0
	for _, m := range a.results {
		if m.Phase == catalog.PhaseDone || m.Phase == catalog.PhaseFlipped || m.Phase == catalog.PhaseCleaningUp {
			done++
		}
		rows += m.RowsCopied
		bytes += m.BytesCopied
		verified += m.RowsVerified
		if m.Timings.CutoverWindow > 0 {
			windows = append(windows, m.Timings.CutoverWindow*1000)
		}
	}
	sort.Float64s(windows)
	fmt.Fprintf(a.out, "\nsummary: %d of %d moves done in %s; %d rows (%s) copied, %d rows verified\n",
		done, a.plan.Moves, elapsed.Round(time.Millisecond), rows, humanBytes(bytes), verified)
	if len(windows) > 0 {
		fmt.Fprintf(a.out, "cutover windows: median %.1fms, max %.1fms\n", windows[len(windows)/2], windows[len(windows)-1])
	}
}
