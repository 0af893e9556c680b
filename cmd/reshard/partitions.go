package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/partitions"
)

// partitionsFlags are shared by `partitions plan` and `partitions apply` (and schedule).
type partitionsFlags struct {
	now         string
	shards      []string
	lockTimeout time.Duration
	attempts    int
	parallel    int
	detailed    bool
}

func (f *partitionsFlags) register(cmd *cobra.Command, withNow bool) {
	fl := cmd.Flags()
	if withNow {
		fl.StringVar(&f.now, "now", "", "pretend the time is this RFC3339 instant (testing, rehearsals)")
		fl.StringSliceVar(&f.shards, "shard", nil, "only these shards (repeatable; default every shard)")
	}
	fl.DurationVar(&f.lockTimeout, "lock-timeout", 2*time.Second, "longest wait for one DDL lock (others queue behind it meanwhile)")
	fl.IntVar(&f.attempts, "attempts", 5, "attempts per DDL when its lock is not granted in time (with backoff)")
	fl.IntVar(&f.parallel, "parallel", 4, "shards worked on at once")
}

func (f *partitionsFlags) options(dryRun bool) (partitions.FleetOptions, error) {
	if f.lockTimeout <= 0 || f.attempts <= 0 || f.parallel <= 0 {
		return partitions.FleetOptions{}, fmt.Errorf("--lock-timeout, --attempts and --parallel must be positive")
	}
	return partitions.FleetOptions{DryRun: dryRun, Parallel: f.parallel,
		Options: partitions.Options{LockTimeout: f.lockTimeout, Attempts: f.attempts}}, nil
}

func (f *partitionsFlags) instant() (time.Time, error) {
	if f.now == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, f.now)
	if err != nil {
		return time.Time{}, fmt.Errorf("--now %q: write an RFC3339 instant such as 2026-03-10T12:00:00Z", f.now)
	}
	return t, nil
}

// pick returns the shards to work on: all, or the ones named (each must exist).
func (f *partitionsFlags) pick(st *catalog.State) (map[string]catalog.Shard, error) {
	if len(f.shards) == 0 {
		return st.Shards, nil
	}
	out := map[string]catalog.Shard{}
	for _, n := range f.shards {
		sh, ok := st.Shards[n]
		if !ok {
			return nil, fmt.Errorf("--shard %s: no such shard in cluster %s (see reshard shard list)", n, globals.cluster)
		}
		out[n] = sh
	}
	return out, nil
}

func newPartitionsCmd() *cobra.Command {
	return group(&cobra.Command{
		Use:   "partitions",
		Short: "Date partitions on every shard: plan, apply",
		Long: "Keeps the date-partitioned tables of the catalog config ready on every shard: partitions\n" +
			"from the current period through premake periods ahead, and retention (detach or drop).",
	}, newPartitionsRunCmd(true), newPartitionsRunCmd(false))
}

func newPartitionsRunCmd(dryRun bool) *cobra.Command {
	f := &partitionsFlags{}
	use, short := "apply", "Create missing partitions and apply retention on every shard"
	if dryRun {
		use, short = "plan", "Show, per shard, which partitions apply would create, detach or drop, and why"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			fo, err := f.options(dryRun)
			if err != nil {
				return err
			}
			now, err := f.instant()
			if err != nil {
				return err
			}
			return withCatalog(ctx, func(_ *catalog.Store, st *catalog.State) error {
				if len(st.Config.Partitions) == 0 {
					return fmt.Errorf("cluster %s has no partition specs: add them under partitions: in cluster.yaml and run reshard init -f cluster.yaml --force (or import the catalog)", globals.cluster)
				}
				shards, err := f.pick(st)
				if err != nil {
					return err
				}
				fo.Migrations = st.Migrations
				reps, err := partitions.Fleet(ctx, shards, st.Config.Partitions, now, fo, pgmeta.ConnectShard)
				if reps == nil {
					return err
				}
				w := cmd.OutOrStdout()
				if perr := result.print(w, reps, func() error { printPartitionReports(w, reps); return nil }); perr != nil {
					return perr
				}
				if err != nil {
					return err
				}
				nerr, changes := 0, 0
				for _, r := range reps {
					nerr += len(r.Errors())
					changes += r.Changes()
				}
				if nerr > 0 {
					return fmt.Errorf("%d problem(s), listed above; the rest was %s", nerr, map[bool]string{true: "planned", false: "applied"}[dryRun])
				}
				if dryRun && f.detailed && changes > 0 {
					return exitCodeError{2}
				}
				return nil
			})
		},
	}
	f.register(cmd, true)
	if dryRun {
		cmd.Flags().BoolVar(&f.detailed, "detailed-exitcode", false, "exit 2 when apply would change something")
	}
	return cmd
}

// printPartitionReports writes, per shard and table, what was (or would be) created,
// fixed, detached, dropped or kept, and why.
func printPartitionReports(w io.Writer, reps []*partitions.Report) {
	for _, r := range reps {
		fmt.Fprintf(w, "shard %s\n", r.Shard)
		if r.Error != "" {
			fmt.Fprintf(w, "  ! %s\n", r.Error)
		}
		would := ""
		if r.DryRun {
			would = "would "
		}
		for _, t := range r.Tables {
			fmt.Fprintf(w, "  %s (%s)", t.Table, t.Interval)
			if n := countReason(t.Skipped, true); n > 0 {
				fmt.Fprintf(w, ", %d period(s) already covered", n)
			}
			now := ""
			if r.DryRun {
				now = " now" // a plan shows the runway before apply
			}
			if t.RunwayUntil != nil {
				fmt.Fprintf(w, ", runway%s %d %s(s) ahead, until %s", now, t.Runway, t.Interval, t.RunwayUntil.Format("2006-01-02 15:04 MST"))
			} else if len(t.Errors) == 0 || t.Partitions > 0 {
				fmt.Fprintf(w, ", NO RUNWAY%s: the current %s has no partition", now, t.Interval)
			}
			fmt.Fprintln(w)
			line := func(mark, verb string, cs []partitions.Change) {
				for _, c := range cs {
					fmt.Fprintf(w, "    %s %s%s %s FROM (%s) TO (%s): %s\n", mark, would, verb, c.Partition, c.From, c.To, c.Reason)
				}
			}
			line("+", "create", t.Created)
			line("~", "fix", t.Fixed)
			line("-", "detach", t.Detached)
			line("-", "drop", t.Dropped)
			for _, c := range t.Skipped {
				if c.Reason != "exists" && !strings.HasPrefix(c.Reason, "covered by") {
					fmt.Fprintf(w, "    = keep %s: %s\n", c.Partition, c.Reason)
				}
			}
			if t.RetentionHeld != "" {
				fmt.Fprintf(w, "    = skipped retention of %s on %s: %s\n", t.Table, r.Shard, t.RetentionHeld)
			}
			for _, e := range t.Errors {
				fmt.Fprintf(w, "    ! %s\n", e)
			}
		}
	}
}

// countReason counts the periods already covered (exists or covered by), or the others.
func countReason(cs []partitions.Change, covered bool) int {
	n := 0
	for _, c := range cs {
		if (c.Reason == "exists" || strings.HasPrefix(c.Reason, "covered by")) == covered {
			n++
		}
	}
	return n
}
