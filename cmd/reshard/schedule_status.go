package main

import (
	"context"
	"fmt"
	"io"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

func init() { statusHooks = append(statusHooks, scheduleStatus) }

// scheduleStatus adds the partition scheduler's leader to `reshard status`.
func scheduleStatus(ctx context.Context, store *catalog.Store, w io.Writer, asJSON bool, out map[string]any) error {
	leader, err := store.LeaderOf(ctx, partitions.ElectionName)
	if err != nil {
		return err
	}
	if asJSON {
		out["partition_scheduler"] = map[string]any{"leader": leader}
		return nil
	}
	if leader == "" {
		fmt.Fprintln(w, "partition scheduler: none running (start one with reshard schedule)")
	} else {
		fmt.Fprintf(w, "partition scheduler: leader %s\n", leader)
	}
	return nil
}
