package main

import (
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/devstack"
)

func newDevCmd() *cobra.Command {
	return group(&cobra.Command{
		Use:   "dev",
		Short: "A local stack: PostgreSQL shards and etcd, with a multi-tenant demo data set",
		Long: `reshard dev runs a local stack for trying reshard: N PostgreSQL 15 clusters (the shards)
and an etcd, as background processes that outlive the command, all in one folder. The shards
hold a multi-tenant demo schema with skewed data (a few tenants much bigger and busier than the
rest), and <dir>/cluster.yaml describes them for ` + "`reshard init -f`" + `.`,
	}, newDevUpCmd(), newDevDownCmd(), newDevStatusCmd(), newDevLoadCmd(), newDevCheckCmd(), newDevEtcdCmd())
}

func newDevUpCmd() *cobra.Command {
	var o devstack.UpOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start N PostgreSQL shards and etcd, load the demo data, write cluster.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			res, err := devstack.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			st := res.State
			v := map[string]any{"state": st, "rows": res.Counts, "seconds": res.Took.Seconds(), "cluster_yaml": filepath.Join(st.Dir, "cluster.yaml")}
			return result.print(w, v, func() error { printDevSummary(w, o.Dir, res); return nil })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Dir, "dir", devstack.DefaultDir, "folder of the stack (created; must not exist or be empty)")
	fl.IntVar(&o.Shards, "shards", 3, "number of PostgreSQL shards (1 to 16)")
	fl.IntVar(&o.Tenants, "tenants", demo.DefaultTenants, "number of demo tenants")
	fl.Float64Var(&o.Scale, "scale", 1, "multiplies the demo rows (1 is about 60,000 orders, some 40 MB)")
	fl.Uint64Var(&o.Seed, "seed", 1, "seed of the demo data (same seed, same data)")
	fl.IntVar(&o.BasePort, "base-port", 0, "first port: shards use base..base+N-1, etcd base+N and base+N+1 (0: free ports)")
	fl.StringVar(&o.Distribution, "distribution", devstack.DistRange, "range: bigint tenant ids, ranges over the ids; hash: uuid tenant ids, ranges over uuid_hash_extended(id, 0)")
	return cmd
}

func printDevSummary(w io.Writer, dirFlag string, res *devstack.UpResult) {
	st := res.State
	fmt.Fprintf(w, "\ndev stack up in %s (%.1fs): %d PostgreSQL shards, etcd, demo data\n\n", st.Dir, res.Took.Seconds(), len(st.Shards))
	for _, s := range st.Shards {
		c := res.Counts[s.Name]
		var weight float64
		var hot []string
		for _, t := range res.Placed[s.Name] {
			weight += t.Weight
			if t.Plan == "enterprise" {
				hot = append(hot, t.ID)
			}
		}
		fmt.Fprintf(w, "  %s  %d tenants, %d orders, %d order items, %d ledger rows, %d events; %.0f%% of the write load\n",
			s.Name, c["tenants"], c["orders"], c["order_items"], c["ledger"], c["events"], 100*weight)
		if len(hot) > 0 {
			fmt.Fprintf(w, "      hot tenants: %s\n", strings.Join(hot, ", "))
		}
		fmt.Fprintf(w, "      psql \"%s\"\n", s.DSN)
	}
	fmt.Fprintf(w, "  etcd  %s (pid %d, log %s)\n\n", st.Etcd.Endpoint, st.Etcd.PID, st.Etcd.Log)
	fmt.Fprintf(w, "  export RESHARD_ETCD=%s RESHARD_CLUSTER=%s\n\n", st.Etcd.Endpoint, st.Cluster)
	dirArg := ""
	if dirFlag != devstack.DefaultDir {
		dirArg = " --dir " + dirFlag
	}
	fmt.Fprintln(w, "next:")
	fmt.Fprintf(w, "  reshard init -f %s        # write the catalog\n", filepath.Join(dirFlag, "cluster.yaml"))
	fmt.Fprintln(w, "  reshard stats collect && reshard plan     # see the hot shard and what to move")
	fmt.Fprintf(w, "  reshard dev load%s --duration 30s       # a live write load on the demo tenants\n", dirArg)
	fmt.Fprintf(w, "  reshard dev down%s                      # stop everything, remove %s\n", dirArg, dirFlag)
}

func newDevEtcdCmd() *cobra.Command {
	var dir string
	var cport, pport int
	cmd := &cobra.Command{
		Use:    devstack.EtcdCommand[1],
		Short:  "Run the dev stack's etcd in the foreground (started by `dev up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devstack.RunEtcd(cmd.Context(), cmd.OutOrStdout(), dir, cport, pport)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "etcd's folder")
	cmd.Flags().IntVar(&cport, "client-port", 0, "client port")
	cmd.Flags().IntVar(&pport, "peer-port", 0, "peer port")
	return cmd
}

func newDevDownCmd() *cobra.Command {
	return onDevStack(&cobra.Command{
		Use:   "down",
		Short: "Stop the dev stack's PostgreSQL clusters and etcd and remove its folder",
		Args:  cobra.NoArgs,
	}, func(cmd *cobra.Command, dirFlag string) error {
		dir, existed, err := devstack.Down(cmd.Context(), dirFlag)
		switch {
		case err != nil:
			return err
		case !existed:
			fmt.Fprintf(cmd.OutOrStdout(), "no dev stack in %s: nothing to do\n", dir)
		default:
			fmt.Fprintf(cmd.OutOrStdout(), "dev stack stopped; %s removed\n", dir)
		}
		return nil
	})
}

func newDevStatusCmd() *cobra.Command {
	return onDevStack(&cobra.Command{
		Use:   "status",
		Short: "Show what the dev stack runs",
		Args:  cobra.NoArgs,
	}, func(cmd *cobra.Command, dirFlag string) error {
		rep, err := devstack.Status(cmd.Context(), dirFlag)
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if err := result.print(w, rep, func() error { printDevStatus(w, rep); return nil }); err != nil {
			return err
		}
		return rep.Err(dirFlag)
	})
}

// onDevStack is c, a command on the dev stack that another one started, with the --dir
// flag naming the stack's folder; run gets the folder.
func onDevStack(c *cobra.Command, run func(cmd *cobra.Command, dirFlag string) error) *cobra.Command {
	var dirFlag string
	c.RunE = func(cmd *cobra.Command, _ []string) error { return run(cmd, dirFlag) }
	c.Flags().StringVar(&dirFlag, "dir", devstack.DefaultDir, "folder of the stack")
	return c
}

func printDevStatus(w io.Writer, rep *devstack.StatusReport) {
	state := map[bool]string{true: "running", false: "stopped"}
	fmt.Fprintf(w, "dev stack in %s (cluster %s, started %s)\n", rep.Dir, rep.Cluster, rep.Created.Format(time.RFC3339))
	for _, s := range rep.Shards {
		fmt.Fprintf(w, "  %-5s %-8s 127.0.0.1:%-5d %d tenants, %s", s.Name, state[s.Running], s.Port, s.Tenants, bytesize.Format(s.Bytes))
		if s.Error != "" {
			fmt.Fprintf(w, "  (%s)", s.Error)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  %-5s %-8s %s pid %d", "etcd", state[rep.Etcd.Running], rep.Etcd.Endpoint, rep.Etcd.PID)
	if rep.Etcd.Error != "" {
		fmt.Fprintf(w, "  (%s)", rep.Etcd.Error)
	}
	fmt.Fprintln(w)
}

func newDevLoadCmd() *cobra.Command {
	var o devstack.LoadOptions
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Run a live write load on the demo tenants (hot tenants get most of it)",
		Long: `reshard dev load runs workers that write to the demo tenants as an application would: new
orders with items, ledger entries that move the tenant's balance in the same transaction,
events, status updates and deletes. Busier tenants get more of the load.

Routing: --route catalog asks the catalog in etcd where each tenant lives (a watched
copy), holds writes to a frozen range, and retries a write rejected by a cutover fence
(SQLSTATE ` + cutover.FenceSQLState + `); --route static uses the ranges the stack was created with; auto
(the default) uses the catalog once ` + "`reshard init`" + ` has written it.

What it did (rows each acknowledged transaction inserted and deleted per tenant, the tenants
it left alone with --quiet) is recorded in <dir>/` + devstack.LoadsDir + `/ for ` + "`reshard dev check`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.ErrOrStderr()
			if isTerminal(o.Log) {
				o.Progress = o.Log
			}
			res, err := devstack.Load(cmd.Context(), o)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			return result.print(w, res.Result, func() error { printLoadResult(w, res); return nil })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Dir, "dir", devstack.DefaultDir, "folder of the stack")
	fl.DurationVar(&o.Duration, "duration", 30*time.Second, "how long to run (0: until Ctrl-C)")
	fl.IntVar(&o.Workers, "workers", 4, "concurrent writers")
	fl.Float64Var(&o.Rate, "rate", 0, "transactions per second over all workers (0: as fast as possible)")
	fl.StringVar(&o.Route, "route", devstack.RouteAuto, "where a tenant lives: auto, catalog or static")
	fl.IntVar(&o.Quiet, "quiet", 0, "leave every N-th tenant in key order alone (never the hot ones), so `dev check` can expect their rows exactly (0: none)")
	return cmd
}

func printLoadResult(w io.Writer, res *devstack.LoadReport) {
	fmt.Fprintf(w, "load: %d transactions acknowledged in %.1fs (%.0f/s); %d attempts, %d fenced and retried, %d other retries, %d failed, %d with unknown outcome\n",
		res.Acked, res.Seconds, float64(res.Acked)/max(res.Seconds, 0.001), res.Attempts, res.Fenced, res.Transient, res.Failed, res.Unknown)
	for _, k := range slices.Sorted(maps.Keys(res.ByKind)) {
		fmt.Fprintf(w, "  %-10s %d\n", k, res.ByKind[k])
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}

func newDevCheckCmd() *cobra.Command {
	var save bool
	cmd := onDevStack(&cobra.Command{
		Use:   "check",
		Short: "Check every tenant's rows on every shard against a fingerprint taken before the load and the moves",
		Long: `reshard dev check --save fingerprints every tenant's rows on every shard (count and hash per
table) into <dir>/` + devstack.BaselineFile + `; run it before the write load and the moves. Every
` + "`reshard dev load`" + ` started afterwards records what its acknowledged transactions did in
<dir>/` + devstack.LoadsDir + `/.

reshard dev check then checks, per shard, that every tenant's rows are on the shard the
catalog says owns it and nowhere else; that a tenant no load wrote to (quiet) has exactly its
starting rows; that a written tenant has its starting row count plus what the load's
acknowledged transactions inserted and deleted (only its invariants if a transaction's outcome
is unknown); that balance = sum(ledger) for every tenant and every acknowledged ledger row is
present once. It prints the tenants checked per shard and exits 1 if anything differs.`,
		Args: cobra.NoArgs,
	}, func(cmd *cobra.Command, dirFlag string) error {
		if save {
			return devCheckSave(cmd, dirFlag)
		}
		return devCheck(cmd, dirFlag)
	})
	cmd.Flags().BoolVar(&save, "save", false, "take the fingerprint (before the load and the moves), forgetting earlier loads")
	return cmd
}

func devCheckSave(cmd *cobra.Command, dirFlag string) error {
	fp, err := devstack.Save(cmd.Context(), dirFlag)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	return result.print(w, map[string]any{"taken": fp.Taken, "file": fp.File}, func() error {
		fmt.Fprintf(w, "fingerprint of every tenant's rows taken (%s):\n", filepath.Join(dirFlag, devstack.BaselineFile))
		for _, s := range fp.Shards {
			fmt.Fprintf(w, "  %s: %d tenants, %d rows\n", s.Name, s.Tenants, s.Rows)
		}
		return nil
	})
}

func devCheck(cmd *cobra.Command, dirFlag string) error {
	res, cerr := devstack.Check(cmd.Context(), dirFlag)
	if res == nil {
		return cerr
	}
	w, rep := cmd.OutOrStdout(), res.Report
	if err := result.print(w, rep, func() error {
		fmt.Fprintf(w, "every tenant's rows on every shard against the fingerprint of %s, owners from %s, %d load(s) since:\n",
			res.Taken.Local().Format("15:04:05"), res.Owners, rep.Loads)
		rep.Tenants.Print(w)
		if rep.Unfinished > 0 {
			fmt.Fprintf(w, "  (%d load(s) ended without a record, killed?: the tenants they could write are checked by invariants only)\n", rep.Unfinished)
		}
		if cerr == nil {
			fmt.Fprintf(w, "ok: every tenant's rows are what they should be; balance = sum(ledger) everywhere; %d acknowledged ledger rows each once on its owner\n", rep.LedgerRows)
		}
		return nil
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("dev check: %w", cerr)
	}
	return nil
}
