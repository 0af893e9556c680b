package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
)

// runFunc is a cobra command's RunE.
type runFunc = func(cmd *cobra.Command, args []string) error

// group is c, a command that only holds subs: run without one of them it prints its help.
// root.go lists the short groups (catalog, shard, stats) with their subcommands through it;
// dev and partitions, whose help is longer, build theirs in their own files.
func group(c *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	c.AddCommand(subs...)
	return c
}

// onStore is the RunE of a command whose work is on the catalog store of --cluster: fn runs
// with the command's context and the store, which is closed however fn returns.
func onStore(fn func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store) error) runFunc {
	return func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		return withStore(ctx, func(store *catalog.Store) error { return fn(ctx, cmd, args, store) })
	}
}

// onCatalog is onStore for the commands that work on the catalog as it is (withCatalog): a
// cluster without one fails with the catalog's own error before fn runs.
func onCatalog(fn func(ctx context.Context, cmd *cobra.Command, args []string, store *catalog.Store, st *catalog.State) error) runFunc {
	return func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error { return fn(ctx, cmd, args, store, st) })
	}
}

// writeCatalog is init's and catalog import's write of a whole catalog: write, an existing
// catalog refused with hint (what to do), then the catalog as etcd now has it, to print.
func writeCatalog(ctx context.Context, store *catalog.Store, hint string, write func() error) (*catalog.State, error) {
	if err := write(); err != nil {
		if errors.Is(err, catalog.ErrExists) {
			return nil, fmt.Errorf("%w (%s)", err, hint)
		}
		return nil, err
	}
	return store.Load(ctx)
}
