package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
)

// resolved is one line of reshard resolve: where a tenant key lives now.
type resolved struct {
	Key   string           `json:"key"`
	Hash  *int64           `json:"hash"` // under hash distribution; null under range
	Range catalog.KeyRange `json:"range"`
	Shard string           `json:"shard"`
	State string           `json:"state"`
	Epoch int64            `json:"epoch"`
}

func newResolveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resolve KEY...",
		Short: "Print the range, shard, state and epoch of each tenant key (and its hash under hash distribution)",
		Long: `Reads the catalog once and resolves each key as the resolver does: under hash distribution
the key's 64-bit hash (PostgreSQL's uuid_hash_extended, hashtextextended or hashint8extended
with seed 0) picks the range; under range, the key itself. Keys are given in the keyspace's
type: an integer, a uuid or a text. A key that is not of that type is refused, naming it,
before anything is printed. Give a negative integer key after -- (reshard resolve -- -42).`,
		Args: cobra.MinimumNArgs(1),
		RunE: onCatalog(func(ctx context.Context, cmd *cobra.Command, args []string, _ *catalog.Store, st *catalog.State) error {
			out, err := resolveKeys(st, args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			return result.print(w, out, func() error { return printResolved(w, st.Config.Keyspace().Hashed(), out) })
		}),
	}
}

// resolveKeys resolves every key, or refuses at the first one that is not of the
// keyspace's type.
func resolveKeys(st *catalog.State, args []string) ([]resolved, error) {
	ks := st.Config.Keyspace()
	cache := catalog.NewStaticCache(st)
	defer cache.Close()
	r := catalog.NewResolver(cache)
	out := make([]resolved, 0, len(args))
	for _, a := range args {
		key, err := catalog.ParseKey(ks.KeyType(), a)
		if err != nil {
			return nil, fmt.Errorf("%w (the keyspace's keys are %s)", err, ks.KeyType())
		}
		rt, err := r.ResolveKey(key)
		if err != nil {
			return nil, err
		}
		res := resolved{Key: key.String(), Range: rt.Range, Shard: rt.Shard, State: rt.State, Epoch: rt.Epoch}
		if ks.Hashed() {
			h := catalog.HashKey(key)
			res.Hash = &h
		}
		out = append(out, res)
	}
	return out, nil
}

func printResolved(w0 io.Writer, hashed bool, out []resolved) error {
	w := tabwriter.NewWriter(w0, 0, 4, 2, ' ', 0)
	if hashed {
		fmt.Fprintln(w, "KEY\tHASH\tRANGE\tSHARD\tSTATE\tEPOCH")
	} else {
		fmt.Fprintln(w, "KEY\tRANGE\tSHARD\tSTATE\tEPOCH")
	}
	for _, r := range out {
		if hashed {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\n", r.Key, *r.Hash, r.Range, r.Shard, r.State, r.Epoch)
		} else {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", r.Key, r.Range, r.Shard, r.State, r.Epoch)
		}
	}
	return w.Flush()
}
