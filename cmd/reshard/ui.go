package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics"
	"github.com/reshard/reshard/ui"
)

func newUICmd() *cobra.Command {
	var (
		listen string
		mf     metricsFlag
	)
	cmd := &cobra.Command{
		Use:   "ui [--listen 127.0.0.1:8080]",
		Short: "Serve a live, read-only status page of the cluster (docs/ui.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return mf.run(cmd, func(ctx context.Context) error {
				return withStore(ctx, func(store *catalog.Store) error {
					feed, srv, err := startPage(ctx, store)
					if err != nil {
						return err
					}
					defer feed.Close()
					if mf.m != nil {
						go feedMetrics(ctx, feed, mf.m)
					}
					ln, err := net.Listen("tcp", listen)
					if err != nil {
						return fmt.Errorf("listen on %s: %w (pick another --listen address)", listen, err)
					}
					fmt.Fprintf(cmd.OutOrStdout(), "reshard ui: cluster %s at http://%s/ (JSON: /api/state); Ctrl-C stops it\n", store.Cluster(), ln.Addr())
					return srv.Serve(ctx, ln)
				})
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the page on (host:port; port 0 picks a free one)")
	mf.register(cmd)
	return cmd
}

// startPage starts the page of store: the catalog's watch that feeds it and its server.
// Closing the feed ends the watch; a server that cannot start leaves no watch running.
func startPage(ctx context.Context, store *catalog.Store) (*ui.Feed, *ui.Server, error) {
	feed, err := ui.StartFeed(ctx, store)
	if err != nil {
		return nil, nil, err
	}
	srv, err := ui.NewServer(feed)
	if err != nil {
		feed.Close()
		return nil, nil, err
	}
	return feed, srv, nil
}

// feedMetrics shows in m what the page shows: each migration it lists, as the catalog's
// watch brings it, and the partition scheduler's last run, until ctx ends.
func feedMetrics(ctx context.Context, feed *ui.Feed, m *metrics.Metrics) {
	for {
		model, _, changed := feed.Current()
		if model != nil {
			for _, v := range model.Migrations {
				r, err := catalog.ParseRange(v.Range)
				if err != nil {
					continue
				}
				m.Watched(&catalog.Migration{ID: v.ID, Range: r, Source: v.Source, Target: v.Target, Phase: v.Phase,
					RowsCopied: v.Progress.RowsCopied, BytesCopied: v.Progress.BytesCopied,
					LagBytes: v.LagBytes, LagSeconds: v.LagSeconds, Timings: v.Timings})
			}
			if run := model.Partitions.Run; run != nil {
				m.PartitionRun(partitionRunOf(*run, model.Partitions.Runway))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// partitionRunOf is the scheduler's last run as the page's model has it.
func partitionRunOf(run ui.RunView, runway []ui.RunwayView) catalog.PartitionRun {
	out := catalog.PartitionRun{Time: run.Time, Seconds: run.Seconds, Outcome: run.Outcome}
	byShard := map[string]int{}
	for _, r := range runway {
		if r.Table == "" {
			continue // a shard the run could not work on
		}
		i, ok := byShard[r.Shard]
		if !ok {
			i = len(out.Shards)
			byShard[r.Shard] = i
			out.Shards = append(out.Shards, catalog.PartitionShardRun{Shard: r.Shard})
		}
		out.Shards[i].Tables = append(out.Shards[i].Tables, catalog.PartitionTableRun{Table: r.Table, Runway: r.Runway})
	}
	return out
}
