package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/partitions"
)

func newScheduleCmd() *cobra.Command {
	f := &partitionsFlags{}
	var (
		every time.Duration
		ttl   int
		mf    metricsFlag
	)
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Run partition maintenance on every shard each interval (one of several schedulers acts)",
		Long: "Runs until SIGTERM or Ctrl-C. Several may run (on several hosts): an etcd election makes\n" +
			"exactly one act, and another takes over within --ttl seconds if it dies (at once if it stops).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			return mf.run(cmd, func(ctx context.Context) error {
				return withCatalog(ctx, func(store *catalog.Store, _ *catalog.State) error {
					host, _ := os.Hostname()
					s := &partitions.Scheduler{
						Catalog:  store,
						Connect:  pgmeta.ConnectShard,
						Recorder: runRecorder{store, mf.m},
						Every:    every,
						Fleet:    fo,
						// Named as the catalog names this process in the election, so that `reshard
						// status` shows the same name for the leader and for the run it recorded.
						Holder: fmt.Sprintf("%s pid %d", host, os.Getpid()),
						TTL:    ttl,
						Log:    newLogger(),
					}
					return s.Run(ctx)
				})
			})
		},
	}
	cmd.Flags().DurationVar(&every, "every", time.Hour, "interval between maintenance runs")
	cmd.Flags().IntVar(&ttl, "ttl", 10, "election lease in seconds: how long a dead leader blocks a takeover")
	f.register(cmd, false)
	mf.register(cmd)
	return cmd
}

// runRecorder records each partition run in the catalog and shows it in the metrics.
type runRecorder struct {
	store *catalog.Store
	m     *metrics.Metrics
}

func (r runRecorder) PutPartitionRun(ctx context.Context, leader *catalog.Leader, run catalog.PartitionRun) error {
	r.m.PartitionRun(run)
	return r.store.PutPartitionRun(ctx, leader, run)
}
