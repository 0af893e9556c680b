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
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/planner"
)

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
refused: re-plan.

Several drivers (on several hosts) may apply the same plan at once: each claims the moves no
other driver runs, one move per shard at a time across all of them, and takes over a move whose
driver died once that driver's lock expires (--lock-ttl). A driver with nothing left to claim
waits for the others and exits 0 once every move of the plan is done.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd, func(ctx context.Context) error {
				if parallel < 1 {
					return fmt.Errorf("--parallel %d: use 1 or more", parallel)
				}
				p, err := readPlan(args[0])
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if p.Empty() {
					fmt.Fprintln(out, "the plan has no steps: nothing to do")
					return nil
				}
				return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
					var bars *progressBars
					if parallel == 1 {
						bars = newProgressBars(os.Stderr)
					}
					ex := newExecutor(store, st, &f, bars, newLogger())
					applied, err := ex.ApplyPlan(ctx, p, migrate.ApplyOptions{
						Parallel: parallel,
						Approve: func() error {
							fmt.Fprint(out, describePlan(p))
							if autoApprove {
								return nil
							}
							return confirm(cmd.InOrStdin(), out)
						},
						Split: func(s planner.Step) { fmt.Fprintf(out, "step %d: split %s at %v\n", s.N, s.Range, s.At) },
						Moved: func(s planner.Step, m *catalog.Migration) {
							bars.finishID(m.ID)
							fmt.Fprintf(out, "step %d: moved %s %s -> %s: %d rows, %s, cutover window %.1fms\n", s.N, s.Range, s.From, s.To,
								m.RowsCopied, bytesize.Format(m.BytesCopied), m.Timings.CutoverWindow*1000)
						},
					})
					bars.finish()
					if applied != nil {
						printApplied(out, p, applied)
					}
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&autoApprove, "auto-approve", false, "apply without asking for confirmation")
	cmd.Flags().IntVar(&parallel, "parallel", 1, "moves to run at once (never two on the same shard)")
	f.register(cmd)
	return cmd
}

// readPlan reads a plan file of this cluster.
func readPlan(path string) (*planner.Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	p, err := planner.Parse(b)
	if err != nil {
		return nil, err
	}
	if p.Cluster != "" && p.Cluster != globals.cluster {
		return nil, fmt.Errorf("the plan is for cluster %q, not %q: pass --cluster %s", p.Cluster, globals.cluster, p.Cluster)
	}
	return p, nil
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

func describePlan(p *planner.Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan %s: %d splits, %d moves, %s to move\n", p.ID, p.Splits, p.Moves, bytesize.Format(p.BytesToMove))
	for _, s := range p.Steps {
		switch s.Kind {
		case planner.StepSplit:
			fmt.Fprintf(&b, "  %2d. split %s at %v on %s: %s\n", s.N, s.Range, s.At, s.From, s.Reason)
		default:
			fmt.Fprintf(&b, "  %2d. move  %s %s -> %s (%s): %s\n", s.N, s.Range, s.From, s.To, bytesize.Format(s.Bytes), s.Reason)
		}
	}
	return b.String()
}

// printApplied is the summary of the plan's moves, whichever driver ran them.
func printApplied(out io.Writer, p *planner.Plan, a *migrate.Applied) {
	var rows, verified, bytes int64
	var windows []float64
	done := 0
	for _, m := range a.Plan {
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
	fmt.Fprintf(out, "\nsummary: %d of %d moves done in %s (%d by this driver); %d rows (%s) copied, %d rows verified\n",
		done, p.Moves, a.Elapsed.Round(time.Millisecond), len(a.Migrations), rows, bytesize.Format(bytes), verified)
	if len(windows) > 0 {
		fmt.Fprintf(out, "cutover windows: median %.1fms, max %.1fms\n", windows[len(windows)/2], windows[len(windows)-1])
	}
}
