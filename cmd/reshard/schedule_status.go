package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

func init() { statusHooks = append(statusHooks, scheduleStatus) }

// shownRunErrors is how many of the last run's errors the text status prints; -o json
// has them all.
const shownRunErrors = 5

// scheduleStatus adds the partition scheduler's leader and its last recorded run to
// `reshard status`.
func scheduleStatus(ctx context.Context, store *catalog.Store, w io.Writer, asJSON bool, out map[string]any) error {
	leader, err := store.LeaderOf(ctx, partitions.ElectionName)
	if err != nil {
		return err
	}
	run, err := store.LastPartitionRun(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		sched := map[string]any{"leader": leader, "last_run": run}
		if run != nil {
			sched["fewest_runway"] = run.Shortest()
		}
		out["partition_scheduler"] = sched
		return nil
	}
	if leader == "" {
		fmt.Fprintln(w, "partition scheduler: none running (start one with reshard schedule)")
	} else {
		fmt.Fprintf(w, "partition scheduler: leader %s\n", leader)
	}
	printPartitionRun(w, run, time.Now())
	return nil
}

func printPartitionRun(w io.Writer, run *catalog.PartitionRun, now time.Time) {
	if run == nil {
		fmt.Fprintln(w, "last partition run: none recorded")
		return
	}
	age := now.Sub(run.Time).Round(time.Second)
	fmt.Fprintf(w, "last partition run: %s (%s ago) by %s: %s in %.1fs, created %d, detached %d, dropped %d\n",
		run.Time.Local().Format("2006-01-02 15:04:05 MST"), age, run.Holder, run.Outcome, run.Seconds,
		run.Created, run.Detached, run.Dropped)
	switch short := run.Shortest(); {
	case run.MinRunway < 0 || len(short) == 0:
		fmt.Fprintln(w, "  runway: no partitioned table was seen")
	case run.MinRunway == 0:
		fmt.Fprintf(w, "  runway: 0 premade partitions left on %s: writes past the current period have no partition; run reshard partitions apply and read its errors\n",
			catalog.RunwayNames(short, 5))
	default:
		until := ""
		if u := sameUntil(short); u != nil {
			until = ", until " + u.Local().Format("2006-01-02 15:04 MST")
		}
		fmt.Fprintf(w, "  runway: %d premade partitions left at the fewest, on %s%s\n", run.MinRunway, catalog.RunwayNames(short, 5), until)
	}
	for i, e := range run.Errors {
		if i == shownRunErrors {
			fmt.Fprintf(w, "  ... %d more errors (reshard status -o json)\n", len(run.Errors)-i)
			break
		}
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}

// sameUntil is the end of the covered periods when the tables listed all share it.
func sameUntil(rs []catalog.PartitionRunway) *time.Time {
	if len(rs) == 0 {
		return nil
	}
	for _, r := range rs {
		if r.RunwayUntil == nil || !r.RunwayUntil.Equal(*rs[0].RunwayUntil) {
			return nil
		}
	}
	return rs[0].RunwayUntil
}
