package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/ui"
)

func newUICmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "ui [--listen 127.0.0.1:8080]",
		Short: "Serve a live, read-only status page of the cluster (docs/ui.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return withStore(ctx, func(store *catalog.Store) error {
				feed, err := ui.StartFeed(ctx, store)
				if err != nil {
					return err
				}
				defer feed.Close()
				srv, err := ui.NewServer(feed)
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("listen on %s: %w (pick another --listen address)", listen, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reshard ui: cluster %s at http://%s/ (JSON: /api/state); Ctrl-C stops it\n", store.Cluster(), ln.Addr())
				return srv.Serve(ctx, ln)
			})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the page on (host:port; port 0 picks a free one)")
	return cmd
}
