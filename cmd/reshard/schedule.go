package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/partitions"
)

func newScheduleCmd() *cobra.Command {
	f := &partitionsFlags{}
	var (
		every time.Duration
		ttl   int
	)
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Run partition maintenance on every shard each interval (one of several schedulers acts)",
		Long: "Runs until SIGTERM or Ctrl-C. Several may run (on several hosts): an etcd election makes\n" +
			"exactly one act, and another takes over within --ttl seconds if it dies (at once if it stops).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if every <= 0 {
				return fmt.Errorf("--every %v: use a positive duration such as 1h", every)
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl %d: use a positive number of seconds", ttl)
			}
			fo, err := f.options(false)
			if err != nil {
				return err
			}
			return withCatalog(ctx, func(store *catalog.Store, _ *catalog.State) error {
				host, _ := os.Hostname()
				logger := log.New(cmd.ErrOrStderr(), "", log.LstdFlags)
				s := &partitions.Scheduler{
					Catalog:  store,
					Connect:  pgmeta.ConnectShard,
					Recorder: catalogRecorder{store},
					Every:    every,
					Fleet:    fo,
					// Named as the catalog names this process in the election, so that `reshard
					// status` shows the same name for the leader and for the run it recorded.
					Holder: fmt.Sprintf("%s pid %d", host, os.Getpid()),
					TTL:    ttl,
					Logf:   logger.Printf,
				}
				return s.Run(ctx)
			})
		},
	}
	cmd.Flags().DurationVar(&every, "every", time.Hour, "interval between maintenance runs")
	cmd.Flags().IntVar(&ttl, "ttl", 10, "election lease in seconds: how long a dead leader blocks a takeover")
	f.register(cmd, false)
	return cmd
}

// catalogRecorder stores each run as the catalog's last partition run, for `reshard
// status`; the catalog refuses it if leadership was lost since the run started.
type catalogRecorder struct{ store *catalog.Store }

func (r catalogRecorder) RecordRun(ctx context.Context, leader *catalog.Leader, rec partitions.RunRecord) error {
	return r.store.PutPartitionRun(ctx, leader, partitionRunOf(rec))
}

// partitionRunOf converts the scheduler's record to the catalog's (the catalog cannot
// import package partitions, which depends on it).
func partitionRunOf(rec partitions.RunRecord) catalog.PartitionRun {
	run := catalog.PartitionRun{Time: rec.Time, Seconds: rec.Seconds, Holder: rec.Holder, Outcome: rec.Outcome,
		Created: rec.Created, Detached: rec.Detached, Dropped: rec.Dropped, MinRunway: rec.MinRunway, Errors: rec.Errors}
	for _, sh := range rec.Shards {
		srun := catalog.PartitionShardRun{Shard: sh.Shard, Error: sh.Error}
		for _, t := range sh.Tables {
			srun.Tables = append(srun.Tables, catalog.PartitionTableRun{Table: t.Table, Runway: t.Runway, RunwayUntil: t.RunwayUntil,
				Created: t.Created, Detached: t.Detached, Dropped: t.Dropped, Errors: t.Errors})
		}
		run.Shards = append(run.Shards, srun)
	}
	return run
}
