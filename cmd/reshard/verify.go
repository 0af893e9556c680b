package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/pgmeta"
)

func newVerifyCmd() *cobra.Command {
	var rangeStr, with, on string
	cmd := &cobra.Command{
		Use:   "verify --range LO:HI --with SHARD",
		Short: "Compare a range's rows (count and order-independent hash per table) on two shards",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := catalog.ParseRange(rangeStr)
			if err != nil {
				return err
			}
			return withCatalog(ctx, func(_ *catalog.Store, st *catalog.State) error {
				if on == "" {
					owner, ok := st.Owner(r.Lo)
					if !ok {
						return fmt.Errorf("no catalog range holds key %d", r.Lo)
					}
					on = owner.Shard
				}
				if with == "" {
					return fmt.Errorf("--with SHARD is required: the shard to compare %s's rows of %s with", on, r)
				}
				conns := make([]*pgx.Conn, 2)
				for i, name := range []string{on, with} {
					sh, ok := st.Shards[name]
					if !ok {
						return fmt.Errorf("unknown shard %q (see reshard shard list)", name)
					}
					c, err := pgmeta.ConnectShard(ctx, sh)
					if err != nil {
						return err
					}
					defer c.Close(ctx)
					conns[i] = c
				}
				v, verr := cutover.Verify(ctx, conns[0], conns[1], st.Config.Key, st.Config.Tables, r)
				out := map[string]any{"range": r.String(), "shards": []string{on, with}, "ok": verr == nil, "tables": v}
				if verr != nil {
					out["error"] = verr.Error()
				}
				w := cmd.OutOrStdout()
				if err := result.print(w, out, func() error {
					tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
					fmt.Fprintf(tw, "TABLE\tROWS ON %s\tROWS ON %s\tMATCH\n", on, with)
					for i := range v.Source {
						s, t := v.Source[i], v.Target[i]
						fmt.Fprintf(tw, "%s\t%d\t%d\t%v\n", s.Table, s.Rows, t.Rows, s.Rows == t.Rows && s.Hash == t.Hash)
					}
					_ = tw.Flush()
					return nil
				}); err != nil {
					return err
				}
				if verr != nil && result.isJSON() {
					return exitCodeError{1} // the JSON says why
				}
				return verr
			})
		},
	}
	cmd.Flags().StringVar(&rangeStr, "range", "", "key range LO:HI")
	cmd.Flags().StringVar(&on, "on", "", "first shard (default: the range's owner)")
	cmd.Flags().StringVar(&with, "with", "", "second shard")
	_ = cmd.MarkFlagRequired("range")
	return cmd
}
