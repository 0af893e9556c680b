package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/internal/pgmeta"
)

func newShardAddCmd() *cobra.Command {
	var dsn, dsnEnv string
	cmd := &cobra.Command{
		Use:   "add NAME (--dsn DSN | --dsn-env VAR)",
		Short: "Add a shard after checking it like init does (reachable, wal_level, tables)",
		Long: `Adds an empty shard to the catalog; it owns no range until the planner or ` + "`reshard move`" + `
gives it one. The DSN must not carry a password: use --dsn-env (a variable holding the DSN, read at
connect time and never stored) or libpq's .pgpass.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sh := catalog.Shard{Name: args[0], DSN: dsn, DSNEnv: dsnEnv, State: catalog.ShardActive}
			if err := catalog.ValidateShard(sh); err != nil {
				return err
			}
			return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
				if _, ok := st.Shards[sh.Name]; ok {
					return fmt.Errorf("shard %q already exists (see `reshard shard list`)", sh.Name)
				}
				if ps := pgmeta.CheckShards(ctx, []catalog.Shard{sh}, st.Config.Keyspace(), st.Config.Tables); len(ps) > 0 {
					return &errProblems{what: "shard add " + sh.Name, problems: ps}
				}
				if err := store.AddShard(ctx, sh); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "shard %s added (%s); it owns no range yet\n", sh.Name, sh.Display())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&dsn, "dsn", "", "libpq connection string, without a password")
	cmd.Flags().StringVar(&dsnEnv, "dsn-env", "", "name of an environment variable holding the DSN")
	return cmd
}

// shardRow is one line of `shard list`.
type shardRow struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Connection string `json:"connection"`
	Ranges     int    `json:"ranges"`
	Bytes      *int64 `json:"bytes,omitempty"` // from the last `stats collect`
	Rows       *int64 `json:"rows,omitempty"`
}

func newShardListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list [-o json]",
		Short: "Shards with their state, ranges and (after `stats collect`) size",
		Args:  cobra.NoArgs,
		RunE: onCatalog(func(ctx context.Context, cmd *cobra.Command, _ []string, store *catalog.Store, st *catalog.State) error {
			stats, err := store.LoadStats(ctx)
			if err != nil {
				return err
			}
			count := map[string]int{}
			for _, r := range st.Ranges {
				count[r.Shard]++
			}
			var rows []shardRow
			for _, sh := range st.Shards {
				row := shardRow{Name: sh.Name, State: sh.State, Connection: sh.Display(), Ranges: count[sh.Name]}
				if ss, ok := stats.Shards[sh.Name]; ok {
					row.Bytes, row.Rows = &ss.Bytes, &ss.Rows
				}
				rows = append(rows, row)
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
			return result.print(cmd.OutOrStdout(), rows, func() error { return printShardRows(cmd.OutOrStdout(), rows) })
		}),
	}
}

func printShardRows(w io.Writer, rows []shardRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tSTATE\tRANGES\tSIZE\tROWS\tCONNECTION")
	for _, r := range rows {
		size, n := "-", "-"
		if r.Bytes != nil {
			size, n = bytesize.Format(*r.Bytes), fmt.Sprint(*r.Rows)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.Name, r.State, r.Ranges, size, n, r.Connection)
	}
	return tw.Flush()
}

func newShardDrainCmd() *cobra.Command {
	var undo bool
	cmd := &cobra.Command{
		Use:   "drain NAME [--undo]",
		Short: "Mark a shard draining: the planner moves all its ranges away",
		Args:  cobra.ExactArgs(1),
		RunE: onStore(func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store) error {
			state := catalog.ShardDraining
			if undo {
				state = catalog.ShardActive
			}
			for attempt := 0; ; attempt++ {
				st, err := store.Load(ctx)
				if err != nil {
					return err
				}
				err = store.SetShardState(ctx, st, args[0], state)
				if errors.Is(err, catalog.ErrConflict) && attempt < 5 {
					continue // someone else changed the shard meanwhile: read again
				}
				if err != nil {
					return err
				}
				break
			}
			if undo {
				fmt.Fprintf(cmd.OutOrStdout(), "shard %s is active again\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "shard %s is draining: `reshard plan` will move its ranges away\n", args[0])
			}
			return nil
		}),
	}
	cmd.Flags().BoolVar(&undo, "undo", false, "mark the shard active again")
	return cmd
}
