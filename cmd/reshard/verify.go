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
	"github.com/reshard/reshard/migrate"
)

func newVerifyCmd() *cobra.Command {
	var rangeStr, source, target, diffOut string
	cmd := &cobra.Command{
		Use:   "verify [ID] | --range LO:HI --source SHARD --target SHARD",
		Short: "Compare a range's rows on two shards online, chunk by chunk, naming the keys that differ",
		Long: `Compare a range's rows on two shards while writes go on: each table is hashed in chunks of
its primary key from a REPEATABLE READ snapshot on each shard, and a differing chunk is narrowed
to the primary keys that differ (up to 100 shown; all of them to --diff-out). With a migration
ID, the migration's range between its source and target: for a migration catching up, both
sides at one exact source position (its driver holds its apply there while the target's
snapshot is taken); otherwise, with one line saying so, each side from its own snapshot.
Exit codes: 0 equal, 1 different (or an error).`,
		Args: cobra.MaximumNArgs(1),
		RunE: onCatalog(func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store, st *catalog.State) error {
			req, err := verifyRequest(ctx, store, st, args, rangeStr, source, target)
			if err != nil {
				return err
			}
			return runVerify(ctx, cmd, store, st, req, diffOut)
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
	expect         int64              // rows, for the ETA (0: unknown)
	m              *catalog.Migration // the migration verified, if any
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
		return verifyReq{r: m.Range, source: m.Source, target: m.Target, expect: m.RowsCopied, m: m}, nil
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

func runVerify(ctx context.Context, cmd *cobra.Command, store *catalog.Store, st *catalog.State, req verifyReq, diffOut string) error {
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
	v, apart, verr := verifyMigration(ctx, store, st, req, conns[0], conns[1], opts)
	out := map[string]any{"range": req.r.String(), "shards": []string{req.source, req.target}, "ok": verr == nil, "verification": v}
	if verr != nil {
		out["error"] = verr.Error()
	}
	if v.LSN != 0 {
		out["lsn"] = v.LSN.String() // both sides were read at this source position
	}
	if apart != "" {
		out["not_at_one_position"] = apart
		if !result.isJSON() {
			fmt.Fprintf(cmd.ErrOrStderr(), "verify: not at one source position (%s): each shard read from its own snapshot; rows written meanwhile may show as different\n", apart)
		}
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

// verifyMigration compares req's range: for a migration catching up, at one source
// position its driver holds its apply at (cutover.VerifyAt through migrate.DriverHold);
// otherwise each shard from its own snapshot, apart saying why (nothing for --range, whose
// shards no migration links: the help says so).
func verifyMigration(ctx context.Context, store *catalog.Store, st *catalog.State, req verifyReq, src, dst *pgx.Conn, opts cutover.OnlineOptions) (v cutover.OnlineVerification, apart string, err error) {
	keys, tables := st.Config.Keyspace(), st.Config.Tables
	if req.m != nil {
		if apart, err = holdable(ctx, store, req.m); err != nil {
			return v, "", err
		}
		if apart == "" {
			v, err = cutover.VerifyAt(ctx, src, dst, migrate.DriverHold{Store: store, ID: req.m.ID}, keys, tables, req.r, opts)
			if !errors.Is(err, migrate.ErrNoHold) {
				return v, "", err
			}
			apart = err.Error()
		}
	}
	v, err = cutover.VerifyShards(ctx, src, dst, keys, tables, req.r, opts)
	return v, apart, err
}

// holdable says why migration m's driver cannot hold its apply for a verify ("": it can
// be asked): only a migration catching up under a live driver has an apply to hold.
func holdable(ctx context.Context, store *catalog.Store, m *catalog.Migration) (string, error) {
	if m.Phase != catalog.PhaseCatchingUp {
		return fmt.Sprintf("migration %s is %s, not catching up", m.ID, m.Phase), nil
	}
	_, held, err := store.MigrationLockHolder(ctx, m.ID)
	if err != nil {
		return "", err
	}
	if !held {
		return fmt.Sprintf("no driver runs migration %s (reshard move --id %s resumes it)", m.ID, m.ID), nil
	}
	return "", nil
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
	at := ""
	if v.LSN != 0 {
		at = " at source position " + v.LSN.String()
	}
	fmt.Fprintf(w, "%d rows in %d chunks compared%s in %.2fs\n", v.Rows, v.Chunks, at, v.Took.Seconds())
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
