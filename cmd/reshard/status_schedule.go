package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

// shownRunErrors is how many of the last run's errors the text status prints; -o json
// has them all.
const shownRunErrors = 5

// schedulerStatus is the partition scheduler's part of `reshard status`: its leader and
// its last recorded run.
type schedulerStatus struct {
	leader string
	run    *catalog.PartitionRun
}

func readSchedulerStatus(ctx context.Context, store *catalog.Store) (schedulerStatus, error) {
	leader, err := store.LeaderOf(ctx, partitions.ElectionName)
	if err != nil {
		return schedulerStatus{}, err
	}
	run, err := store.LastPartitionRun(ctx)
	if err != nil {
		return schedulerStatus{}, err
	}
	return schedulerStatus{leader: leader, run: run}, nil
}

// jsonValue is the "partition_scheduler" of `reshard status -o json`.
func (s schedulerStatus) jsonValue() map[string]any {
	v := map[string]any{"leader": s.leader, "last_run": s.run}
	if s.run != nil {
		v["fewest_runway"] = s.run.Shortest()
	}
	return v
}

func (s schedulerStatus) print(w io.Writer, now time.Time) {
	if s.leader == "" {
		fmt.Fprintln(w, "partition scheduler: none running (start one with reshard schedule)")
	} else {
		fmt.Fprintf(w, "partition scheduler: leader %s\n", s.leader)
	}
	printPartitionRun(w, s.run, now)
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
