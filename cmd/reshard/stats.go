package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/internal/pgmeta"
)

func newStatsCollectCmd() *cobra.Command {
	var (
		o   pgmeta.FleetMeasureOptions
		top int
	)
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
			if top < 0 || o.SampleWrites < 0 {
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
				if o.SampleWrites > 0 && !result.isJSON() && isTerminal(cmd.ErrOrStderr()) {
					fmt.Fprintf(cmd.ErrOrStderr(), "measuring %d shards, sampling writes for %s...\n", len(st.Shards), o.SampleWrites)
				}
				ms, problems := pgmeta.MeasureShards(ctx, st, o)
				if len(problems) > 0 {
					return &errProblems{what: "stats collect", problems: problems}
				}
				stats := catalog.ComputeStats(st, ms, top, include)
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
	cmd.Flags().DurationVar(&o.SampleWrites, "sample-writes", 10*time.Second, "how long to count writes from the WAL (0: do not)")
	cmd.Flags().IntVar(&top, "top", 10, "keep the top K tenants by bytes and by writes/s as hot keys")
	cmd.Flags().Int64Var(&o.SampleAboveRows, "sample-above-rows", 5_000_000, "size tables with more rows than this from a sample")
	return cmd
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
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(s.Shards) > 0 {
		fmt.Fprintln(tw, "SHARD\tSIZE\tROWS\tCOLLECTED\tTABLES")
		for _, n := range slices.Sorted(maps.Keys(s.Shards)) {
			ss := s.Shards[n]
			var parts []string
			for _, t := range slices.Sorted(maps.Keys(ss.Tables)) {
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%s\n", h.Name(), h.Shard, bytesize.Format(h.Bytes), h.Rows, h.WritesPerSec, strings.Join(custom, " "))
		}
		tw.Flush()
	}
}

func newStatsPutCmd() *cobra.Command {
	var key string
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
				hk, err := store.PutTenantCustom(ctx, key, m)
				if err != nil {
					return err
				}
				if hk.Tenant != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "tenant %s: %s recorded\n", hk.Name(), strings.Join(metrics, " "))
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "key %d: %s recorded\n", hk.Key, strings.Join(metrics, " "))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the tenant key, of the keyspace's type (under hash the key itself, e.g. a uuid, which is hashed as the catalog does)")
	cmd.Flags().StringArrayVar(&metrics, "metric", nil, "NAME=VALUE (repeatable)")
	return cmd
}
