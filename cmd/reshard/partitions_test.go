package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/partitions"
)

// TestPartitionsCLI drives `reshard partitions plan|apply` against a real etcd catalog and
// two real shards, with --now as the clock.
func TestPartitionsCLI(t *testing.T) {
	etcd, _ := partitionsCluster(t, "clitest")
	ctx := testContext(t, 2*time.Minute)
	reshard := func(args ...string) (string, error) {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--etcd", etcd, "--cluster", "clitest"}, args...))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	now := "--now=2026-03-10T12:00:00Z"

	out, err := reshard("partitions", "plan", now, "--detailed-exitcode", "-o", "json")
	var ec exitCodeError
	if !errors.As(err, &ec) || ec.code != 2 {
		t.Fatalf("plan with changes: %v, want exit code 2\n%s", err, out)
	}
	var reps []partitions.Report
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	if len(reps) != 2 || reps[0].Shard != "s1" || len(reps[1].Tables[0].Created) != 3 || !reps[0].DryRun {
		t.Errorf("plan: %s", out)
	}

	out, err = reshard("partitions", "apply", now, "--shard", "s2")
	if err != nil || !strings.Contains(out, "shard s2") || strings.Contains(out, "shard s1") || !strings.Contains(out, "+ create events_p20260312") {
		t.Errorf("apply --shard s2: %v\n%s", err, out)
	}
	if out, err = reshard("partitions", "apply", now); err != nil || strings.Count(out, "+ create") != 3 {
		t.Errorf("apply: %v, want s1's 3 partitions created\n%s", err, out)
	}
	t.Logf("apply output:\n%s", out)
	if out, err := reshard("partitions", "plan", now, "--detailed-exitcode"); err != nil {
		t.Errorf("plan after apply: %v, want no changes\n%s", err, out)
	}
	if _, err := reshard("partitions", "plan", "--now", "yesterday"); err == nil || !strings.Contains(err.Error(), "RFC3339") {
		t.Errorf("bad --now: %v", err)
	}
	if _, err := reshard("partitions", "apply", now, "--shard", "s9"); err == nil || !strings.Contains(err.Error(), "no such shard") {
		t.Errorf("unknown shard: %v", err)
	}
}

// partitionsCluster starts the fleet the partition commands' tests share: two shards with
// an events table partitioned by day, and an etcd holding cluster's catalog of them. It
// returns etcd's endpoint and the catalog. The setup has a deadline of its own, so the
// test's starts once the fleet is ready.
func partitionsCluster(t *testing.T, cluster string) (string, *catalog.Store) {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	srv, cli := testenv.Etcd(t)
	ctx := testContext(t, 2*time.Minute)
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
