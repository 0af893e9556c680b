package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/migrate"
)

func newSplitCmd() *cobra.Command {
	var (
		rangeStr, at, to, id string
		f                    execFlags
	)
	cmd := &cobra.Command{
		Use:   "split --range LO:HI --at KEY [--to SHARD]",
		Short: "Split a catalog range at a key; with --to, move the upper part [KEY, HI) to SHARD",
		Long: `Splits one catalog range into [LO, KEY) and [KEY, HI) in one etcd transaction. Both parts
stay on their shard, so no data moves and no write waits. With --to, the upper part is then
moved to SHARD like reshard move does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(ctx context.Context) error {
				r, err := catalog.ParseRange(rangeStr)
				if err != nil {
					return err
				}
				key, err := strconv.ParseInt(at, 10, 64)
				if err != nil {
					return fmt.Errorf("--at %q: want a 64-bit integer key inside the range", at)
				}
				left, right, err := r.Split(key)
				if err != nil {
					return err
				}
				return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
					owner, ok := st.Owner(r.Lo)
					if !ok || !owner.Range.Equal(r) {
						return fmt.Errorf("range %s is not a catalog range (see reshard catalog show); to split part of one, give the whole range", r)
					}
					if id == "" {
						id = newID("m")
					}
					bars := newProgressBars(cmd.ErrOrStderr())
					ex := newExecutor(store, st, &f, bars, newLogger())
					if to != "" {
						// The move is checked before the split: a refused one changes nothing.
						if err := ex.CheckMove(ctx, st, right, to, id); err != nil && !errors.Is(err, migrate.ErrNothingToDo) {
							return err
						}
					}
					if err := store.Split(ctx, st, r.Lo, key); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "split %s into %s and %s on %s\n", r, left, right, owner.Shard)
					if to == "" {
						return nil
					}
					m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: right, Target: to})
					bars.finish()
					if errors.Is(err, migrate.ErrNothingToDo) {
						return nil
					}
					return reportMigration(cmd.OutOrStdout(), m, err)
				})
			})
		},
	}
	cmd.Flags().StringVar(&rangeStr, "range", "", "the catalog range to split, LO:HI")
	cmd.Flags().StringVar(&at, "at", "", "the first key of the upper part")
	cmd.Flags().StringVar(&to, "to", "", "move the upper part to this shard")
	cmd.Flags().StringVar(&id, "id", "", "migration id of the move (default: generated)")
	f.register(cmd)
	_ = cmd.MarkFlagRequired("range")
	_ = cmd.MarkFlagRequired("at")
	return cmd
}
