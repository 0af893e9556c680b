package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
)

func newCatalogShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show [-o json]",
		Short: "Shards, ranges, states, epochs and migrations of the cluster",
		Args:  cobra.NoArgs,
		RunE: onCatalog(func(ctx context.Context, cmd *cobra.Command, _ []string, _ *catalog.Store, st *catalog.State) error {
			w := cmd.OutOrStdout()
			return result.print(w, withKeyspace(st), func() error {
				fmt.Fprintf(w, "cluster %s at etcd revision %d\n", st.Config.Cluster, st.Revision)
				return printCatalog(w, st)
			})
		}),
	}
}

// withKeyspace is st with its config's key type and distribution filled in: a catalog
// written before they were stored leaves them empty (bigint, range), and -o json should
// name them all the same.
func withKeyspace(st *catalog.State) *catalog.State {
	out := *st
	ks := st.Config.Keyspace()
	out.Config.KeyType, out.Config.Distribution = ks.KeyType(), ks.Dist()
	return &out
}

// keyspaceLine says which column holds the tenant key, its type, the distribution and what
// a range's bounds are compared with, then the sharded tables with their own key columns.
func keyspaceLine(cfg catalog.Config) string {
	ks := cfg.Keyspace()
	over := "the key"
	if ks.Hashed() {
		over = ks.KeyType().HashFunction() + "(key, 0)"
	}
	tables := make([]string, len(cfg.Tables))
	for i, t := range cfg.Tables {
		tables[i] = t
		if c := ks.Column(t); c != ks.Key {
			tables[i] += " (key " + c + ")"
		}
	}
	return fmt.Sprintf("key %s of type %s, distribution %s (ranges over %s); sharded tables: %s",
		cfg.Key, ks.KeyType(), ks.Dist(), over, strings.Join(tables, ", "))
}

// printCatalog writes the catalog as text tables.
func printCatalog(w io.Writer, st *catalog.State) error {
	fmt.Fprintln(w, keyspaceLine(st.Config))
	for _, p := range st.Config.Partitions {
		fmt.Fprintf(w, "partitions of %s by %s: every %s, %d ahead", p.Table, p.Column, p.Interval, p.Premake)
		if p.Retention != "" {
			fmt.Fprintf(w, ", retention %s", p.Retention)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	count := map[string]int{}
	for _, r := range st.Ranges {
		count[r.Shard]++
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTATE\tRANGES\tCONNECTION")
	for _, n := range slices.Sorted(maps.Keys(st.Shards)) {
		sh := st.Shards[n]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", sh.Name, sh.State, count[n], sh.Display())
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RANGE\tSHARD\tSTATE\tEPOCH\tMIGRATION")
	for _, r := range st.Ranges {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.Range, r.Shard, r.State, r.Epoch, r.Migration)
	}
	tw.Flush()
	if len(st.Migrations) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MIGRATION\tRANGE\tSOURCE\tTARGET\tPHASE\tUPDATED")
		for _, id := range slices.Sorted(maps.Keys(st.Migrations)) {
			m := st.Migrations[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Range, m.Source, m.Target, m.Phase, m.Updated.Local().Format(time.DateTime))
		}
		tw.Flush()
	}
	return nil
}

func newCatalogExportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export [--out FILE]",
		Short: "Write a backup of the whole catalog (JSON) to stdout or a file",
		Args:  cobra.NoArgs,
		RunE: onStore(func(ctx context.Context, cmd *cobra.Command, _ []string, store *catalog.Store) error {
			data, err := store.Export(ctx)
			if err != nil {
				return err
			}
			data = append(data, '\n')
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(data)
				return err
			}
			if err := os.WriteFile(out, data, 0o600); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "catalog of cluster %s written to %s\n", store.Cluster(), out)
			return nil
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write (default stdout)")
	return cmd
}

func newCatalogImportCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "import FILE [--force]",
		Short: "Restore a catalog backup made by `catalog export` (- reads stdin)",
		Long: `Restores a backup made by ` + "`reshard catalog export`" + ` into the cluster it came from. The whole file
is checked first (ranges tile the key line, shards exist, every key is a catalog key); a bad file
changes nothing. An existing catalog is refused unless --force, which replaces everything but the
locks.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			data, err := readInput(args[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			return withStore(ctx, func(store *catalog.Store) error {
				st, err := writeCatalog(ctx, store, "nothing was written", func() error {
					return store.Import(ctx, data, force)
				})
				if err != nil {
					return err
				}
				return result.print(cmd.OutOrStdout(), st, func() error {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "catalog of cluster %s restored from %s (revision %d): %d shards, %d ranges, %d migrations\n",
						store.Cluster(), args[0], st.Revision, len(st.Shards), len(st.Ranges), len(st.Migrations))
					return err
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing catalog")
	return cmd
}

func newCatalogHistoryCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history [--limit N]",
		Short: "The append-only log of ownership changes, splits, phase changes",
		Args:  cobra.NoArgs,
		RunE: onStore(func(ctx context.Context, cmd *cobra.Command, _ []string, store *catalog.Store) error {
			evs, err := store.History(ctx, limit)
			if err != nil {
				return err
			}
			return result.print(cmd.OutOrStdout(), evs, func() error { return printHistory(cmd.OutOrStdout(), evs) })
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "show the last N events (0: all)")
	return cmd
}

// printHistory writes catalog events as a text table.
func printHistory(w io.Writer, evs []catalog.Event) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tRANGE\tCHANGE\tMIGRATION\tDETAIL")
	for _, ev := range evs {
		rng := ""
		if ev.Range != nil {
			rng = ev.Range.String()
		}
		change := ev.Shard
		if ev.From != "" || ev.To != "" {
			change = ev.From + " -> " + ev.To
		}
		if ev.Epoch != 0 {
			change += fmt.Sprintf(" (epoch %d)", ev.Epoch)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Local().Format(time.DateTime), ev.Kind, rng, change, ev.Migration, ev.Detail)
	}
	return tw.Flush()
}
