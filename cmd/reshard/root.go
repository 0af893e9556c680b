package main

import (
	"os"

	"github.com/spf13/cobra"
)

// globalFlags are the flags every command shares (README.md, Global flags).
type globalFlags struct {
	etcd     string
	cluster  string
	output   string
	etcdCA   string
	etcdCert string
	etcdKey  string
	etcdUser string
}

var globals globalFlags

func newRootCmd() *cobra.Command {
	// A flag the parser refuses is reported before the logs are set up: in text.
	logs.logger, logs.json, logs.errAttrs = nil, false, nil
	root := &cobra.Command{
		Use:           "reshard",
		Short:         "Rebalance and re-partition multi-tenant PostgreSQL shards online",
		SilenceUsage:  true,
		SilenceErrors: true,
		// -o is checked once, before any command runs, and picks the printer every
		// command writes its result through.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := setupLogs(cmd.ErrOrStderr()); err != nil {
				return err
			}
			p, err := newPrinter(globals.output)
			if err != nil {
				return err
			}
			result = p
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&globals.etcd, "etcd", envOr("RESHARD_ETCD", "127.0.0.1:2379"), "etcd endpoints, comma-separated (env RESHARD_ETCD)")
	pf.StringVar(&globals.cluster, "cluster", envOr("RESHARD_CLUSTER", "default"), "cluster name in the catalog (env RESHARD_CLUSTER)")
	pf.StringVarP(&globals.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&logs.flags.level, "log-level", envOr("RESHARD_LOG", "warn"), "log records at this level and above: debug, info, warn or error (env RESHARD_LOG)")
	pf.StringVar(&logs.flags.format, "log-format", envOr("RESHARD_LOG_FORMAT", "text"), "log lines as text (key=value) or json, one record a line (env RESHARD_LOG_FORMAT)")
	pf.StringVar(&globals.etcdCA, "etcd-cacert", os.Getenv("RESHARD_ETCD_CACERT"), "CA bundle to verify etcd's TLS certificate")
	pf.StringVar(&globals.etcdCert, "etcd-cert", os.Getenv("RESHARD_ETCD_CERT"), "client certificate for etcd TLS")
	pf.StringVar(&globals.etcdKey, "etcd-key", os.Getenv("RESHARD_ETCD_KEY"), "client key for etcd TLS")
	pf.StringVar(&globals.etcdUser, "etcd-user", os.Getenv("RESHARD_ETCD_USER"), "etcd user[:password]; the password may instead come from RESHARD_ETCD_PASSWORD")
	root.AddCommand(
		newInitCmd(),
		group(&cobra.Command{Use: "catalog", Short: "Show, back up and restore the shard catalog"},
			newCatalogShowCmd(), newCatalogExportCmd(), newCatalogImportCmd(), newCatalogHistoryCmd()),
		group(&cobra.Command{Use: "shard", Short: "Add a shard, list shards, mark one to be emptied"},
			newShardAddCmd(), newShardListCmd(), newShardDrainCmd()),
		group(&cobra.Command{Use: "stats", Short: "Measure, show and annotate shard, range and hot-key statistics"},
			newStatsCollectCmd(), newStatsShowCmd(), newStatsPutCmd()),
		newPlanCmd(), newApplyCmd(), newMoveCmd(), newSplitCmd(), newStatusCmd(), newCancelCmd(), newCleanupCmd(),
		newVerifyCmd(), newPartitionsCmd(), newScheduleCmd(), newDevCmd(), newUICmd(), newResolveCmd(),
	)
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
