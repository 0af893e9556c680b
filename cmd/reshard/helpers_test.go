package main

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// testContext is the context of a test's CLI runs and checks, bounded by d so that a shard
// or etcd that stops answering fails the test instead of hanging it. It ends when the test
// function returns, before the test's cleanups run, as a deferred cancel would.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// cliCatalog is an etcd holding one cluster's catalog, which a test runs the CLI against.
type cliCatalog struct {
	etcd   string // etcd's endpoint
	cli    *clientv3.Client
	store  *catalog.Store
	global []string // --etcd and --cluster naming the catalog
}

// newCatalog writes the catalog of cfg.Cluster (shards, and ranges or nil for the key line
// split evenly) to a new embedded etcd.
func newCatalog(t *testing.T, ctx context.Context, cfg catalog.Config, shards []catalog.Shard, ranges []catalog.Range) *cliCatalog {
	t.Helper()
	srv, cli := testenv.Etcd(t)
	return addCatalog(t, ctx, srv.Endpoint(), cli, cfg, shards, ranges)
}

// addCatalog is newCatalog on the etcd at endpoint (cli), which may hold other clusters.
func addCatalog(t *testing.T, ctx context.Context, endpoint string, cli *clientv3.Client, cfg catalog.Config, shards []catalog.Shard, ranges []catalog.Range) *cliCatalog {
	t.Helper()
	store, err := catalog.NewStore(cli, cfg.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Init(ctx, cfg, shards, ranges, false); err != nil {
		t.Fatal(err)
	}
	return &cliCatalog{etcd: endpoint, cli: cli, store: store, global: []string{"--etcd", endpoint, "--cluster", cfg.Cluster}}
}

// runner is cliRunner with the flags naming the catalog first.
func (c *cliCatalog) runner(t *testing.T, ctx context.Context) func(args ...string) cliResult {
	return cliRunner(t, ctx, c.global...)
}
