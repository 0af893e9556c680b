package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/internal/pgmeta"
)

func newStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Measure, show and annotate shard, range and hot-key statistics",
	}
	cmd.AddCommand(newStatsCollectCmd(), newStatsShowCmd(), newStatsPutCmd())
	return cmd
}

type collectOptions struct {
	sampleWrites    time.Duration
	top             int
	sampleAboveRows int64
}

func newStatsCollectCmd() *cobra.Command {
	var o collectOptions
	cmd := &cobra.Command{
		Use:   "collect [--sample-writes 10s] [--top 10]",
		Short: "Measure every shard and store the stats in the catalog",
		Long: `Measures every shard at once: per shard, total and per-table bytes (heap, indexes, TOAST, all
partitions) and rows; per range, bytes, rows and distinct keys (from its owning shard); the top-K
tenants by bytes and by writes/s. Writes are counted from the WAL for --sample-writes through a
temporary logical slot (test_decoding) that is always dropped afterwards; 0 skips the sample.
Tables above --sample-above-rows rows are sized from a TABLESAMPLE instead of a full scan.
If any shard cannot be measured, nothing is written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if o.top < 0 || o.sampleWrites < 0 {
				return errors.New("--top and --sample-writes must not be negative")
			}
			return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
				old, err := store.LoadStats(ctx)
				if err != nil {
					return err
				}
				var include []int64
				for _, hk := range old.HotKeys {
					if len(hk.Custom) > 0 {
						include = append(include, hk.Key)
					}
				}
				if o.sampleWrites > 0 && !result.isJSON() && isTerminal(cmd.ErrOrStderr()) {
					fmt.Fprintf(cmd.ErrOrStderr(), "measuring %d shards, sampling writes for %s...\n", len(st.Shards), o.sampleWrites)
				}
				ms, problems := measureShards(ctx, st, o)
				if len(problems) > 0 {
					return &errProblems{what: "stats collect", problems: problems}
				}
				stats := catalog.ComputeStats(st, ms, o.top, include)
				if err := store.PutStats(ctx, stats); err != nil {
					return err
				}
				saved, err := store.LoadStats(ctx)
				if err != nil {
					return err
				}
				return printStats(cmd.OutOrStdout(), saved, "writes")
			})
		},
	}
	cmd.Flags().DurationVar(&o.sampleWrites, "sample-writes", 10*time.Second, "how long to count writes from the WAL (0: do not)")
	cmd.Flags().IntVar(&o.top, "top", 10, "keep the top K tenants by bytes and by writes/s as hot keys")
	cmd.Flags().Int64Var(&o.sampleAboveRows, "sample-above-rows", 5_000_000, "size tables with more rows than this from a sample")
	return cmd
}

// measureShards measures every shard concurrently; per shard, sizes and the write sample
// run at the same time on two connections.
func measureShards(ctx context.Context, st *catalog.State, o collectOptions) ([]catalog.ShardMeasurement, []string) {
	var mu sync.Mutex
	var out []catalog.ShardMeasurement
	var problems []string
	var wg sync.WaitGroup
	for _, sh := range st.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := measureShard(ctx, sh, st.Config, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				problems = append(problems, "shard "+sh.Name+": "+err.Error())
				return
			}
			out = append(out, *m)
		}()
	}
	wg.Wait()
	sort.Strings(problems)
	sort.Slice(out, func(i, j int) bool { return out[i].Shard < out[j].Shard })
	return out, problems
}

func measureShard(ctx context.Context, sh catalog.Shard, cfg catalog.Config, o collectOptions) (*catalog.ShardMeasurement, error) {
	dsn, err := sh.ConnString()
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "shard "+sh.Name+": "))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sizes *pgmeta.Sizes
	var sample *pgmeta.WriteSample
	var sizeErr, sampleErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgmeta.Connect(ctx, dsn)
		if err != nil {
			sizeErr = err
			cancel()
			return
		}
		defer conn.Close(context.WithoutCancel(ctx))
		sizes, sizeErr = pgmeta.Measure(ctx, conn, cfg.Key, cfg.Tables, pgmeta.MeasureOptions{SampleAboveRows: o.sampleAboveRows})
		if sizeErr != nil {
			cancel()
		}
	}()
	if o.sampleWrites > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgmeta.Connect(ctx, dsn)
			if err != nil {
				sampleErr = err
				cancel()
				return
			}
			defer conn.Close(context.WithoutCancel(ctx))
			sample, sampleErr = pgmeta.SampleWrites(ctx, conn, cfg.Key, cfg.Tables, o.sampleWrites)
			if sampleErr != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// The first failure is the cause; the other side only saw the cancellation.
	for _, err := range []error{sizeErr, sampleErr} {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := errors.Join(sizeErr, sampleErr); err != nil {
		return nil, err
	}
	m := &catalog.ShardMeasurement{Shard: sh.Name, Tables: map[string]catalog.TableStats{}, Tenants: map[int64]catalog.TenantLoad{}, At: time.Now().UTC()}
	for t, ts := range sizes.Tables {
		m.Tables[t] = catalog.TableStats{Bytes: ts.Bytes, Rows: ts.Rows}
	}
	for k, ts := range sizes.Tenants {
		m.Tenants[k] = catalog.TenantLoad{Bytes: ts.Bytes, Rows: ts.Rows}
	}
	if sample != nil {
		m.SampleSeconds = sample.Elapsed.Seconds()
		for k, n := range sample.Writes {
			tl := m.Tenants[k]
			tl.Writes = n
			m.Tenants[k] = tl
		}
	}
	return m, nil
}

func newStatsShowCmd() *cobra.Command {
	var by string
	cmd := &cobra.Command{
		Use:   "show [-o json] [--by writes|bytes]",
		Short: "The stats stored by the last `stats collect` (and `stats put`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if by != "writes" && by != "bytes" {
				return fmt.Errorf("--by %q: use writes or bytes", by)
			}
			return withStore(ctx, func(store *catalog.Store) error {
				stats, err := store.LoadStats(ctx)
				if err != nil {
					return err
				}
				if len(stats.Shards) == 0 && len(stats.HotKeys) == 0 {
					if _, err := store.Load(ctx); err != nil {
						return err
					}
				}
				return printStats(cmd.OutOrStdout(), stats, by)
			})
		},
	}
	cmd.Flags().StringVar(&by, "by", "writes", "order hot keys by writes (writes/s) or bytes")
	return cmd
}

// printStats writes stats as JSON (-o json) or text; hot keys are ordered by writes/s or
// bytes, heaviest first.
func printStats(w io.Writer, s *catalog.Stats, by string) error {
	sort.SliceStable(s.HotKeys, func(i, j int) bool {
		a, b := s.HotKeys[i], s.HotKeys[j]
		if by == "bytes" && a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		if a.WritesPerSec != b.WritesPerSec {
			return a.WritesPerSec > b.WritesPerSec
		}
		if a.Bytes != b.Bytes {
			return a.Bytes > b.Bytes
		}
		return a.Key < b.Key
	})
	return result.print(w, s, func() error { printStatsText(w, s, by); return nil })
}

// printStatsText writes stats as text tables: shards, ranges, hot keys.
func printStatsText(w io.Writer, s *catalog.Stats, by string) {
	if len(s.Shards) == 0 {
		fmt.Fprintln(w, "no stats yet: run `reshard stats collect`")
	}
	names := make([]string, 0, len(s.Shards))
	for n := range s.Shards {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(names) > 0 {
		fmt.Fprintln(tw, "SHARD\tSIZE\tROWS\tCOLLECTED\tTABLES")
		for _, n := range names {
			ss := s.Shards[n]
			var parts []string
			tables := make([]string, 0, len(ss.Tables))
			for t := range ss.Tables {
				tables = append(tables, t)
			}
			sort.Strings(tables)
			for _, t := range tables {
				parts = append(parts, fmt.Sprintf("%s %s/%d rows", t, bytesize.Format(ss.Tables[t].Bytes), ss.Tables[t].Rows))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n, bytesize.Format(ss.Bytes), ss.Rows, ss.CollectedAt.Local().Format(time.DateTime), strings.Join(parts, ", "))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(s.Ranges) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RANGE\tSHARD\tSIZE\tROWS\tKEYS\tWRITES/S")
		for _, r := range s.Ranges {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.1f\n", r.Range, r.Shard, bytesize.Format(r.Bytes), r.Rows, r.Keys, r.WritesPerSec)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(s.HotKeys) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "HOT KEY (by %s)\tSHARD\tSIZE\tROWS\tWRITES/S\tCUSTOM\n", by)
		for _, h := range s.HotKeys {
			var custom []string
			for k, v := range h.Custom {
				custom = append(custom, fmt.Sprintf("%s=%g", k, v))
			}
			sort.Strings(custom)
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.1f\t%s\n", h.Key, h.Shard, bytesize.Format(h.Bytes), h.Rows, h.WritesPerSec, strings.Join(custom, " "))
		}
		tw.Flush()
	}
}

func newStatsPutCmd() *cobra.Command {
	var key int64
	var metrics []string
	cmd := &cobra.Command{
		Use:   "put --key K --metric NAME=VALUE [--metric ...]",
		Short: "Record an application's own numbers for a key (e.g. read_qps), kept across collects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("key") {
				return errors.New("give the tenant key with --key K")
			}
			if len(metrics) == 0 {
				return errors.New("give at least one --metric NAME=VALUE, e.g. --metric read_qps=120")
			}
			m := map[string]float64{}
			for _, s := range metrics {
				name, v, err := catalog.ParseMetric(s)
				if err != nil {
					return err
				}
				m[name] = v
			}
			return withCatalog(ctx, func(store *catalog.Store, _ *catalog.State) error {
				if err := store.PutHotKeyCustom(ctx, key, m); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key %d: %s recorded\n", key, strings.Join(metrics, " "))
				return nil
			})
		},
	}
	cmd.Flags().Int64Var(&key, "key", 0, "the tenant key")
	cmd.Flags().StringArrayVar(&metrics, "metric", nil, "NAME=VALUE (repeatable)")
	return cmd
}
