package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
)

func newStatusCmd() *cobra.Command {
	var (
		watch    bool
		interval time.Duration
		all      bool
	)
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "Migrations: phase, progress, lag, cutover windows",
		Args:  cobra.MaximumNArgs(1),
		RunE: onStore(func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store) error {
			for {
				if err := printStatus(ctx, store, cmd.OutOrStdout(), args, all, watch && isTerminal(cmd.OutOrStdout())); err != nil {
					return err
				}
				if !watch {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
			}
		}),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval with --watch")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include finished migrations older than a day")
	return cmd
}

func printStatus(ctx context.Context, store *catalog.Store, w io.Writer, ids []string, all, clear bool) error {
	shown, err := shownMigrations(ctx, store, ids, all)
	if err != nil {
		return err
	}
	reports := migrationStatuses(ctx, store, shown)
	sched, err := readSchedulerStatus(ctx, store)
	if err != nil {
		return err
	}
	return result.print(w, map[string]any{"migrations": reports, "partition_scheduler": sched.jsonValue()}, func() error {
		if clear {
			fmt.Fprint(w, "\033[H\033[2J")
		}
		if err := printMigrations(w, shown, reports); err != nil {
			return err
		}
		sched.print(w, time.Now())
		return nil
	})
}

// shownMigrations are the migrations status shows, oldest first: the one named, or the
// unfinished ones and those finished within a day (all of them with --all).
func shownMigrations(ctx context.Context, store *catalog.Store, ids []string, all bool) ([]catalog.Migration, error) {
	var ms []catalog.Migration
	if len(ids) == 1 {
		m, err := store.GetMigration(ctx, ids[0])
		if err != nil {
			return nil, err
		}
		ms = append(ms, *m)
	} else {
		var err error
		if ms, err = store.ListMigrations(ctx); err != nil {
			return nil, err
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Created.Before(ms[j].Created) })
	shown := ms[:0]
	for _, m := range ms {
		if all || len(ids) == 1 || !m.Terminal() || time.Since(m.Updated) < 24*time.Hour {
			shown = append(shown, m)
		}
	}
	return shown, nil
}

// driverColumn is who runs an unfinished migration: its lock holder (host, pid, start),
// "none" when nobody does (or its lock could not be read: the line below says so); "-"
// for a finished one.
func driverColumn(m catalog.Migration, r migrationStatus) string {
	switch {
	case m.Terminal():
		return "-"
	case r.Driver != "":
		return r.Driver
	}
	return "none"
}

// printMigrations writes the status table, each unfinished migration's last error, and
// the slots and advice of the reports.
func printMigrations(w io.Writer, shown []catalog.Migration, reports []migrationStatus) error {
	if len(shown) == 0 {
		fmt.Fprintln(w, "no migrations")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRANGE\tFROM\tTO\tPHASE\tCOPIED\tLAG\tWINDOW\tUPDATED\tDRIVER")
	for i, m := range shown {
		lag := "-"
		if m.Phase == catalog.PhaseCatchingUp || m.Phase == catalog.PhaseCopying {
			lag = fmt.Sprintf("%s/%.1fs", bytesize.Format(m.LagBytes), m.LagSeconds)
		}
		win := "-"
		if m.Timings.CutoverWindow > 0 {
			win = fmt.Sprintf("%.1fms", m.Timings.CutoverWindow*1000)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d rows, %s\t%s\t%s\t%s\t%s\n", m.ID, m.Range, m.Source, m.Target, m.Phase,
			m.RowsCopied, bytesize.Format(m.BytesCopied), lag, win, m.Updated.Local().Format("15:04:05"), driverColumn(m, reports[i]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range shown {
		if m.LastError != "" && !m.Terminal() {
			fmt.Fprintf(w, "%s: last error: %s\n", m.ID, m.LastError)
		}
		if m.Verify != nil && m.Verify.Waiting != "" && !m.Terminal() && !m.Flipped() {
			fmt.Fprintf(w, "%s: %s\n", m.ID, m.Verify.Waiting)
		}
	}
	printSlots(w, reports)
	return nil
}
