package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/pgmeta"
)

func newVerifyCmd() *cobra.Command {
	var rangeStr, source, target, diffOut string
	cmd := &cobra.Command{
		Use:   "verify [ID] | --range LO:HI --source SHARD --target SHARD",
		Short: "Compare a range's rows on two shards online, chunk by chunk, naming the keys that differ",
		Long: `Compare a range's rows on two shards while writes go on: each table is hashed in chunks of
its primary key from a REPEATABLE READ snapshot on each shard, and a differing chunk is narrowed
to the primary keys that differ (up to 100 shown; all of them to --diff-out). With a migration
ID, the migration's range between its source and target (a migration catching up: rows written
during the verify may show as different; its cutover verifies at one exact position).
Exit codes: 0 equal, 1 different (or an error).`,
		Args: cobra.MaximumNArgs(1),
		RunE: onCatalog(func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store, st *catalog.State) error {
			req, err := verifyRequest(ctx, store, st, args, rangeStr, source, target)
			if err != nil {
				return err
			}
			return runVerify(ctx, cmd, st, req, diffOut)
		}),
	}
	cmd.Flags().StringVar(&rangeStr, "range", "", "key range LO:HI")
	cmd.Flags().StringVar(&source, "source", "", "first shard (default: the range's owner)")
	cmd.Flags().StringVar(&target, "target", "", "second shard")
	cmd.Flags().StringVar(&source, "on", "", "same as --source")
	cmd.Flags().StringVar(&target, "with", "", "same as --target")
	_ = cmd.Flags().MarkHidden("on")
	_ = cmd.Flags().MarkHidden("with")
	cmd.Flags().StringVar(&diffOut, "diff-out", "", "write every differing key to this file")
	return cmd
}

type verifyReq struct {
	r              catalog.KeyRange
	source, target string
	expect         int64 // rows, for the ETA (0: unknown)
}

// verifyRequest is what to compare: a migration's range and shards, or the flags'.
func verifyRequest(ctx context.Context, store *catalog.Store, st *catalog.State, args []string, rangeStr, source, target string) (verifyReq, error) {
	if len(args) == 1 {
		if rangeStr != "" || source != "" || target != "" {
			return verifyReq{}, errors.New("give a migration ID or --range/--source/--target, not both")
		}
		m, err := store.GetMigration(ctx, args[0])
		if err != nil {
			return verifyReq{}, fmt.Errorf("migration %s: %w (see reshard status)", args[0], err)
		}
		return verifyReq{r: m.Range, source: m.Source, target: m.Target, expect: m.RowsCopied}, nil
	}
	if rangeStr == "" {
		return verifyReq{}, errors.New("--range LO:HI is required (or a migration ID)")
	}
	r, err := catalog.ParseRange(rangeStr)
	if err != nil {
		return verifyReq{}, err
	}
	if source == "" {
		owner, ok := st.Owner(r.Lo)
		if !ok {
			return verifyReq{}, fmt.Errorf("no catalog range holds key %d", r.Lo)
		}
		source = owner.Shard
	}
	if target == "" {
		return verifyReq{}, fmt.Errorf("--target SHARD is required: the shard to compare %s's rows of %s with", source, r)
	}
	return verifyReq{r: r, source: source, target: target}, nil
}

func runVerify(ctx context.Context, cmd *cobra.Command, st *catalog.State, req verifyReq, diffOut string) error {
	conns := make([]*pgx.Conn, 2)
	for i, name := range []string{req.source, req.target} {
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
	opts := cutover.OnlineOptions{Progress: verifyProgress(cmd.ErrOrStderr()), Expect: req.expect}
	if diffOut != "" {
		f, err := os.Create(diffOut)
		if err != nil {
			return fmt.Errorf("--diff-out: %w", err)
		}
		defer f.Close()
		opts.DiffOut = f
	}
	v, verr := cutover.VerifyShards(ctx, conns[0], conns[1], st.Config.Keyspace(), st.Config.Tables, req.r, opts)
	out := map[string]any{"range": req.r.String(), "shards": []string{req.source, req.target}, "ok": verr == nil, "verification": v}
	if verr != nil {
		out["error"] = verr.Error()
	}
	w := cmd.OutOrStdout()
	if err := result.print(w, out, func() error { return printVerification(w, req, v) }); err != nil {
		return err
	}
	if verr != nil && result.isJSON() {
		return exitCodeError{1} // the JSON says why
	}
	return verr
}

func printVerification(w io.Writer, req verifyReq, v cutover.OnlineVerification) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintf(tw, "TABLE\tROWS ON %s\tROWS ON %s\tCHUNKS\tDIFFERING CHUNKS\tMATCH\n", req.source, req.target)
	for _, t := range v.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%v\n", t.Table, t.Rows, t.TargetRows, t.Chunks, t.DiffChunks, t.DiffChunks == 0)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d rows in %d chunks compared in %.2fs\n", v.Rows, v.Chunks, v.Took.Seconds())
	for _, d := range v.Diffs {
		fmt.Fprintln(w, "  "+d.String())
	}
	if v.DiffCount > len(v.Diffs) {
		fmt.Fprintf(w, "  ... and %d more (--diff-out FILE lists them all)\n", v.DiffCount-len(v.Diffs))
	}
	return nil
}

// verifyProgress draws rows compared, chunks, rate and ETA on a terminal.
func verifyProgress(w io.Writer) func(cutover.OnlineProgress) {
	if !isTerminal(w) {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(p cutover.OnlineProgress) {
		if bar == nil {
			bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		eta := ""
		if p.ETA > 0 {
			eta = ", ETA " + p.ETA.Round(time.Second).String()
		}
		bar.Describe(fmt.Sprintf("verify %s: %d rows, %d chunks%s", p.Table, p.Rows, p.Chunks, eta))
		_ = bar.Set64(p.Rows)
	}
}
