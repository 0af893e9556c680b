package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// The files `dev check` and `dev load` share in the stack's folder.
const (
	devBaselineFile = "fingerprint.json" // every tenant's rows before the load and the moves
	devLoadsDir     = "loads"            // one <pid>.json per `dev load` since then
)

func newDevCheckCmd() *cobra.Command {
	var dirFlag string
	var save bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check every tenant's rows on every shard against a fingerprint taken before the load and the moves",
		Long: `reshard dev check --save fingerprints every tenant's rows on every shard (count and hash per
table) into <dir>/` + devBaselineFile + `; run it before the write load and the moves. Every
` + "`reshard dev load`" + ` started afterwards records what its acknowledged transactions did in
<dir>/` + devLoadsDir + `/.

reshard dev check then checks, per shard, that every tenant's rows are on the shard the
catalog says owns it and nowhere else; that a tenant no load wrote to (quiet) has exactly its
starting rows; that a written tenant has its starting row count plus what the load's
acknowledged transactions inserted and deleted (only its invariants if a transaction's outcome
is unknown); that balance = sum(ledger) for every tenant and every acknowledged ledger row is
present once. It prints the tenants checked per shard and exits 1 if anything differs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if save {
				return devCheckSave(cmd.Context(), cmd.OutOrStdout(), dirFlag)
			}
			return devCheck(cmd.Context(), cmd.OutOrStdout(), dirFlag)
		},
	}
	cmd.Flags().StringVar(&dirFlag, "dir", ".reshard-dev", "folder of the stack")
	cmd.Flags().BoolVar(&save, "save", false, "take the fingerprint (before the load and the moves), forgetting earlier loads")
	return cmd
}

// readyDevState reads a stack's state and refuses one that is not up.
func readyDevState(dirFlag string) (*devState, error) {
	dir, err := devAbsDir(dirFlag)
	if err != nil {
		return nil, err
	}
	st, err := readDevState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no dev stack in %s (start one with `reshard dev up`)", dir)
	} else if err != nil {
		return nil, err
	}
	if !st.Ready {
		return nil, fmt.Errorf("the dev stack in %s did not finish starting: run `reshard dev down --dir %s`, then `reshard dev up`", dir, dirFlag)
	}
	return st, nil
}

// devConnect connects to every shard of the stack; close closes them all.
func devConnect(ctx context.Context, st *devState) (map[string]demo.Querier, func(), error) {
	qs := map[string]demo.Querier{}
	var conns []*pgx.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close(context.WithoutCancel(ctx))
		}
	}
	for _, s := range st.Shards {
		c, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect to %s (is the stack up? `reshard dev status`): %w", s.Name, err)
		}
		conns = append(conns, c)
		qs[s.Name] = c
	}
	return qs, closeAll, nil
}

func devCheckSave(ctx context.Context, out io.Writer, dirFlag string) error {
	st, err := readyDevState(dirFlag)
	if err != nil {
		return err
	}
	if running := devRunningLoads(st.Dir); len(running) > 0 {
		return fmt.Errorf("a load is running (pid %s): stop it first, a fingerprint must be taken while nothing writes", strings.Join(running, ", "))
	}
	qs, closeAll, err := devConnect(ctx, st)
	if err != nil {
		return err
	}
	defer closeAll()
	base := demo.Baseline{Taken: time.Now().UTC(), Tables: demo.Tables}
	if base.Snapshot, err = demo.TakeSnapshot(ctx, qs, demo.Tables); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(st.Dir, devLoadsDir)); err != nil {
		return err
	}
	if err := devWriteJSONFile(filepath.Join(st.Dir, devBaselineFile), base); err != nil {
		return err
	}
	if globals.output == "json" {
		return writeJSON(out, map[string]any{"taken": base.Taken, "file": filepath.Join(st.Dir, devBaselineFile)})
	}
	fmt.Fprintf(out, "fingerprint of every tenant's rows taken (%s):\n", filepath.Join(dirFlag, devBaselineFile))
	for _, s := range st.Shards {
		var rows int64
		for _, tables := range base.Snapshot[s.Name] {
			for _, f := range tables {
				rows += f.Rows
			}
		}
		fmt.Fprintf(out, "  %s: %d tenants, %d rows\n", s.Name, len(base.Snapshot[s.Name]), rows)
	}
	return nil
}

func devCheck(ctx context.Context, out io.Writer, dirFlag string) error {
	st, err := readyDevState(dirFlag)
	if err != nil {
		return err
	}
	var base demo.Baseline
	if err := devReadJSONFile(filepath.Join(st.Dir, devBaselineFile), &base); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no fingerprint in %s: run `reshard dev check --save` before the load and the moves", dirFlag)
	} else if err != nil {
		return err
	}
	if running := devRunningLoads(st.Dir); len(running) > 0 {
		return fmt.Errorf("a load is still running (pid %s): stop it first (its writes are not all known yet)", strings.Join(running, ", "))
	}
	loads, err := devReadLoads(st.Dir)
	if err != nil {
		return err
	}
	owner, how, err := devOwner(ctx, st)
	if err != nil {
		return err
	}
	qs, closeAll, err := devConnect(ctx, st)
	if err != nil {
		return err
	}
	defer closeAll()
	rep, cerr := demo.CheckStack(ctx, qs, owner, &base, loads)
	if rep == nil {
		return cerr
	}
	if globals.output == "json" {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "every tenant's rows on every shard against the fingerprint of %s, owners from %s, %d load(s) since:\n",
			base.Taken.Local().Format("15:04:05"), how, rep.Loads)
		rep.Tenants.Print(out)
		if rep.Unfinished > 0 {
			fmt.Fprintf(out, "  (%d load(s) ended without a record, killed?: the tenants they could write are checked by invariants only)\n", rep.Unfinished)
		}
	}
	if cerr != nil {
		return fmt.Errorf("dev check: %w", cerr)
	}
	if globals.output != "json" {
		fmt.Fprintf(out, "ok: every tenant's rows are what they should be; balance = sum(ledger) everywhere; %d acknowledged ledger rows each once on its owner\n", rep.LedgerRows)
	}
	return nil
}

// devOwner says which shard owns a tenant: the catalog's, or the ranges the stack was
// made with before `reshard init`.
func devOwner(ctx context.Context, st *devState) (func(int64) string, string, error) {
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{st.Etcd.Endpoint}}, st.Cluster)
	if err != nil {
		return nil, "", fmt.Errorf("open the catalog: %w", err)
	}
	defer store.Close()
	cs, err := store.Load(ctx)
	if errors.Is(err, catalog.ErrNotFound) {
		names := make([]string, len(st.Shards))
		for i, s := range st.Shards {
			names[i] = s.Name
		}
		cs = &catalog.State{Ranges: catalog.EvenRanges(names)}
		return func(t int64) string { r, _ := cs.Owner(t); return r.Shard }, "the ranges the stack was created with", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("read the catalog: %w", err)
	}
	return func(t int64) string { r, _ := cs.Owner(t); return r.Shard }, "the catalog", nil
}

// devStartLoadRecord writes the record of a starting load into the stack's folder; the
// returned function writes its result (nil: it failed) when it ends.
func devStartLoadRecord(dir string, quiet map[int64]bool) (func(*demo.Result), error) {
	if err := os.MkdirAll(filepath.Join(dir, devLoadsDir), 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, devLoadsDir, strconv.Itoa(os.Getpid())+".json")
	rec := demo.NewLoadRecord(os.Getpid(), time.Now(), quiet)
	if err := devWriteJSONFile(path, rec); err != nil {
		return nil, fmt.Errorf("record the load in %s: %w", path, err)
	}
	return func(res *demo.Result) {
		if res == nil {
			return // no end: a check treats what it could write as uncertain
		}
		rec.Finish(res, time.Now())
		_ = devWriteJSONFile(path, rec)
	}, nil
}

// devRunningLoads lists the pids of loads whose record has no end and whose process runs.
func devRunningLoads(dir string) []string {
	loads, _ := devReadLoads(dir)
	var out []string
	for _, l := range loads {
		if l.Ended == nil && l.PID != os.Getpid() && processAlive(l.PID) {
			out = append(out, strconv.Itoa(l.PID))
		}
	}
	return out
}

func devReadLoads(dir string) ([]demo.LoadRecord, error) {
	files, err := filepath.Glob(filepath.Join(dir, devLoadsDir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []demo.LoadRecord
	for _, f := range files {
		var rec demo.LoadRecord
		if err := devReadJSONFile(f, &rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

func devWriteJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func devReadJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged (%v): take the fingerprint again with `reshard dev check --save`", path, err)
	}
	return nil
}
