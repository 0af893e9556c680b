package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/migrate"
)

func newCancelCmd() *cobra.Command {
	return onMigrationID(&cobra.Command{
		Use:   "cancel ID",
		Short: "Roll back a migration that has not flipped (slot, publication, fence and copied rows removed)",
		Args:  cobra.ExactArgs(1),
	}, func(ctx context.Context, ex *migrate.Executor, id string) (*catalog.Migration, error) {
		return ex.Cancel(ctx, id)
	})
}

func newCleanupCmd() *cobra.Command {
	var dropFence bool
	cmd := onMigrationID(&cobra.Command{
		Use:   "cleanup ID",
		Short: "Delete a flipped range's rows from its old shard (after move --cleanup later)",
		Long: `Deletes the moved range's rows from the old shard in small throttled batches and marks the
migration done. The fence stays on the old shard as a tombstone, so a stale client's write fails
with SQLSTATE RS001 instead of landing on the wrong shard; --drop-fence removes it (and the
fence trigger once no fence is left on that shard and no unfinished migration uses the shard)
when no client can be stale any more.`,
		Args: cobra.ExactArgs(1),
	}, func(ctx context.Context, ex *migrate.Executor, id string) (*catalog.Migration, error) {
		return ex.Cleanup(ctx, id, dropFence)
	})
	cmd.Flags().BoolVar(&dropFence, "drop-fence", false, "also remove the tombstone fence on the old shard")
	return cmd
}

// onMigrationID is c, a command on the one migration its argument names (cancel,
// cleanup), with the flags of the commands that run migrations: do runs on the ID as
// runMigration runs it.
func onMigrationID(c *cobra.Command, do func(ctx context.Context, ex *migrate.Executor, id string) (*catalog.Migration, error)) *cobra.Command {
	var f execFlags
	c.RunE = func(cmd *cobra.Command, args []string) error {
		return runMigration(cmd, &f, func(ctx context.Context, ex *migrate.Executor) (*catalog.Migration, error) {
			return do(ctx, ex, args[0])
		})
	}
	f.register(c)
	return c
}

// runMigration is the body shared by the commands that drive one migration: open the
// catalog, build the executor, run do, and print the migration it returns (also on error,
// so the operator sees where it stopped).
func runMigration(cmd *cobra.Command, f *execFlags, do func(context.Context, *migrate.Executor) (*catalog.Migration, error)) error {
	return f.metrics.run(cmd, func(ctx context.Context) error {
		return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
			m, err := do(ctx, newExecutor(store, st, f, nil, newLogger()))
			return reportMigration(cmd.OutOrStdout(), m, err)
		})
	})
}
