package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// cliResult is what one in-process run of the CLI produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line in-process like main's run, capturing output. Commands
// share the package's global flags, so tests that use it must not run in parallel.
func runCLI(t *testing.T, ctx context.Context, args ...string) cliResult {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(bytes.NewReader(nil))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	res := cliResult{stdout: out.String()}
	var ec exitCodeError
	switch {
	case err == nil:
	case errors.As(err, &ec):
		res.code = ec.code
	default:
		errb.WriteString("reshard: " + err.Error() + "\n")
		res.code = 1
	}
	res.stderr = errb.String()
	return res
}

// partitionsCluster starts the fleet the partition commands' tests share: two shards with
// an events table partitioned by day, and an etcd holding cluster's catalog of them. It
// returns etcd's endpoint and the catalog. The setup has a deadline of its own, so the
// test's starts once the fleet is ready.
func partitionsCluster(t *testing.T, cluster string) (string, *catalog.Store) {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	srv, cli := testenv.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var shards []catalog.Shard
	for i, pg := range pgs {
		pg.Exec(ctx, `CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id, created_at)) PARTITION BY RANGE (created_at)`)
		shards = append(shards, catalog.Shard{Name: []string{"s1", "s2"}[i], DSN: pg.DSNApp()})
	}
	store, err := catalog.NewStore(cli, cluster)
	if err != nil {
		t.Fatal(err)
	}
	cfg := catalog.Config{Cluster: cluster, Key: "tenant_id", Tables: []string{"events"},
		Partitions: []catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", Premake: 2}}}
	if err := store.Init(ctx, cfg, shards, nil, false); err != nil {
		t.Fatal(err)
	}
	return srv.Endpoint(), store
}
