package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/planner"
)

func newPlanCmd() *cobra.Command {
	def := planner.DefaultOptions()
	var (
		strategy  string
		maxBytes  string
		out       string
		detailed  bool
		noIsolate bool
		opts      = def
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Propose splits and moves that even out the load of the shards",
		Long: `Reads the catalog and the stats of the last ` + "`reshard stats collect`" + ` and proposes splits and
moves: shards marked draining are emptied, a range that alone carries more than a shard should
is split (around a hot tenant so it gets its own range, or at the load-weighted median), then
ranges move from the most to the least loaded shard while a shard is outside --threshold of the
mean. Every step says why. Nothing is changed: write the plan with --out and run it with
` + "`reshard apply FILE`" + `, which refuses it if a range it touches changed since.

Load is a multiple of the mean load of an active shard (1.00 = the mean), from bytes,
writes/s or both (--strategy). The lower bound is the best max/mean any plan could reach.`,
		Example: `  reshard plan
  reshard plan --strategy writes --threshold 0.05 --max-moves 10 --out plan.json
  reshard plan --detailed-exitcode -o json   # exit 2 when there is something to do`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			// Validate sees the strategy as given, so one error lists every bad flag.
			opts.Strategy = planner.Strategy(strings.ToLower(strings.TrimSpace(strategy)))
			opts.IsolateHotKeys = !noIsolate
			if err := opts.Validate(); err != nil {
				return err
			}
			if opts.MaxBytes, err = bytesize.Parse(maxBytes); err != nil {
				return fmt.Errorf("--max-bytes %q: write a size such as 50GiB, 500MB or 2000000000", maxBytes)
			}
			return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
				stats, err := store.LoadStats(ctx)
				if err != nil {
					return err
				}
				p, err := planner.Compute(st, stats, opts)
				if err != nil {
					return err
				}

				w := cmd.OutOrStdout()
				if out != "" {
					if err := writePlanFile(out, p); err != nil {
						return err
					}
				}
				if err := result.print(w, p, func() error {
					if err := p.WriteText(w); err != nil {
						return err
					}
					if out != "" && !p.Empty() {
						fmt.Fprintf(w, "\nplan written to %s; run it with: reshard apply %s\n", out, out)
					}
					return nil
				}); err != nil {
					return err
				}
				if detailed && !p.Empty() {
					return exitCodeError{2}
				}
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&strategy, "strategy", string(def.Strategy), "what load is: size (bytes), writes (writes/s) or balanced (both, each as a share of the fleet)")
	fl.Float64Var(&opts.Threshold, "threshold", def.Threshold, "act only on shards outside this fraction of the mean (0.1 = 10%)")
	fl.Float64Var(&opts.ImprovementThreshold, "improvement-threshold", def.ImprovementThreshold, "skip a move that lowers the larger load of its two shards by less than this fraction of the moved range's load")
	fl.IntVar(&opts.MaxMoves, "max-moves", 0, "at most this many moves (0: no cap)")
	fl.StringVar(&maxBytes, "max-bytes", "0", "move at most this much data, e.g. 50GiB or 2000000000 (0: no cap)")
	fl.BoolVar(&noIsolate, "no-isolate", false, "never give a hot tenant its own range; split only at the load-weighted median")
	fl.Float64Var(&opts.HotKeyLoad, "hot-key-load", def.HotKeyLoad, "isolate a tenant carrying at least this multiple of the mean load when its range is split")
	fl.Float64Var(&opts.MaxRangeLoad, "max-range-load", def.MaxRangeLoad, "split a range carrying more than this multiple of the mean load")
	fl.StringVar(&out, "out", "", "write the plan (JSON) to `FILE`, for reshard apply")
	fl.BoolVar(&detailed, "detailed-exitcode", false, "exit 0 when there is nothing to do, 2 when the plan has steps, 1 on error")
	return cmd
}

// writePlanFile writes the plan next to its final name and renames it, so an interrupted
// write never leaves half a plan for apply to read.
func writePlanFile(path string, p *planner.Plan) error {
	b, err := p.MarshalIndent()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write plan file: %w (check that the folder of --out exists and is writable)", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write plan file %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write plan file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write plan file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write plan file %s: %w", path, err)
	}
	return nil
}
