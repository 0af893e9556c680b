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
		rangeStr, at, atKey, to, id string
		f                           execFlags
	)
	cmd := &cobra.Command{
		Use:   "split --range LO:HI --at POS|--at-key KEY [--to SHARD]",
		Short: "Split a catalog range at a position or a tenant key; with --to, move the upper part to SHARD",
		Long: `Splits one catalog range into [LO, AT) and [AT, HI) in one etcd transaction. Both parts
stay on their shard, so no data moves and no write waits. With --to, the upper part is then
moved to SHARD like reshard move does.

--at is a position on the key line: the key under range distribution, a 64-bit hash under
hash. --at-key is a tenant key in the keyspace's type (an integer, a uuid or a text), placed
where every other part of reshard places it: under hash, PostgreSQL's hash of it
(uuid_hash_extended, hashtextextended or hashint8extended with seed 0), so the key is the
first of the upper part. A key of another type, or one whose position is not strictly
inside the range, is refused and nothing is written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd, func(ctx context.Context) error {
				r, err := catalog.ParseRange(rangeStr)
				if err != nil {
					return err
				}
				if atKey == "" {
					// Checked before etcd is asked: a position needs no keyspace.
					if _, err := splitAt(catalog.Keyspace{}, r, at, ""); err != nil {
						return err
					}
				}
				return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
					owner, ok := st.Owner(r.Lo)
					if !ok || !owner.Range.Equal(r) {
						return fmt.Errorf("range %s is not a catalog range (see reshard catalog show); to split part of one, give the whole range", r)
					}
					key, err := splitAt(st.Config.Keyspace(), r, at, atKey)
					if err != nil {
						return err
					}
					left, right, err := r.Split(key)
					if err != nil {
						return err
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
	cmd.Flags().StringVar(&at, "at", "", "the first position of the upper part (a key under range, a hash under hash)")
	cmd.Flags().StringVar(&atKey, "at-key", "", "the tenant key that starts the upper part, in the keyspace's type (hashed under hash)")
	cmd.Flags().StringVar(&to, "to", "", "move the upper part to this shard")
	cmd.Flags().StringVar(&id, "id", "", "migration id of the move (default: generated)")
	f.register(cmd)
	_ = cmd.MarkFlagRequired("range")
	cmd.MarkFlagsOneRequired("at", "at-key")
	cmd.MarkFlagsMutuallyExclusive("at", "at-key")
	return cmd
}

// splitAt is the position where --at or --at-key puts the split of r. --at is a position on
// the key line; --at-key a tenant key of ks's type, placed by Keyspace.Position (the key
// under range, PostgreSQL's hash of it under hash), the one placement every SQL filter uses,
// so the key starts the upper part. A position not strictly inside r is refused here, with
// the key's hash named, rather than by the catalog.
func splitAt(ks catalog.Keyspace, r catalog.KeyRange, at, atKey string) (int64, error) {
	if atKey == "" {
		pos, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("--at %q: want a 64-bit integer key inside the range (or --at-key KEY for a tenant key)", at)
		}
		return pos, nil
	}
	pos, err := ks.PositionOfText(atKey)
	if err != nil {
		return 0, fmt.Errorf("--at-key %q: %w (the keyspace's keys are %s)", atKey, err, ks.KeyType())
	}
	what := fmt.Sprintf("--at-key %s", atKey)
	if ks.Hashed() {
		what = fmt.Sprintf("--at-key %s hashes to %d (%s)", atKey, pos, ks.KeyType().HashFunction())
	}
	switch {
	case pos == r.Lo:
		return 0, fmt.Errorf("%s, the first position of range %s: the range already starts there, nothing to split", what, r)
	case !r.Contains(pos):
		return 0, fmt.Errorf("%s, which is not inside range %s: split the range that holds it (reshard resolve %s)", what, r, atKey)
	}
	return pos, nil
}
