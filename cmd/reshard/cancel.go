package main

import (
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newCancelCmd, newCleanupCmd) }

func newCancelCmd() *cobra.Command {
	var f execFlags
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Roll back a migration that has not flipped (slot, publication, fence and copied rows removed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, closeStore, err := openStore(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			st, err := store.Load(ctx)
			if err != nil {
				return err
			}
			m, err := newExecutor(store, st, &f, nil, newLogger()).Cancel(ctx, args[0])
			if m != nil {
				if perr := printReport(cmd.OutOrStdout(), m); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	f.register(cmd)
	return cmd
}

func newCleanupCmd() *cobra.Command {
	var (
		f         execFlags
		dropFence bool
	)
	cmd := &cobra.Command{
		Use:   "cleanup ID",
		Short: "Delete a flipped range's rows from its old shard (after move --cleanup later)",
		Long: `Deletes the moved range's rows from the old shard in small throttled batches and marks the
migration done. The fence stays on the old shard as a tombstone, so a stale client's write fails
with SQLSTATE RS001 instead of landing on the wrong shard; --drop-fence removes it (and the
fence trigger once no fence is left on that shard) when no client can be stale any more.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			store, closeStore, err := openStore(ctx)
			if err != nil {
				return err
			}
			defer closeStore()
			st, err := store.Load(ctx)
			if err != nil {
				return err
			}
			m, err := newExecutor(store, st, &f, nil, newLogger()).Cleanup(ctx, args[0], dropFence)
			if m != nil {
				if perr := printReport(cmd.OutOrStdout(), m); perr != nil && err == nil {
					err = perr
				}
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&dropFence, "drop-fence", false, "also remove the tombstone fence on the old shard")
	return cmd
}
