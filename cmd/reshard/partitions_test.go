package main

import (
	"encoding/json"
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
	env := partitionsCluster(t, "clitest")
	ctx := testContext(t, 2*time.Minute)
	run := env.runner(t, ctx)
	now := "--now=2026-03-10T12:00:00Z"

	res := run("partitions", "plan", now, "--detailed-exitcode", "-o", "json")
	if res.code != 2 {
		t.Fatalf("plan with changes: exit %d, want 2\n%s%s", res.code, res.stdout, res.stderr)
	}
	var reps []partitions.Report
	if err := json.Unmarshal([]byte(res.stdout), &reps); err != nil {
		t.Fatalf("plan -o json: %v\n%s", err, res.stdout)
	}
	if len(reps) != 2 || reps[0].Shard != "s1" || len(reps[1].Tables[0].Created) != 3 || !reps[0].DryRun {
		t.Errorf("plan: %s", res.stdout)
	}

	res = run("partitions", "apply", now, "--shard", "s2")
	if out := res.stdout; res.code != 0 || !strings.Contains(out, "shard s2") || strings.Contains(out, "shard s1") || !strings.Contains(out, "+ create events_p20260312") {
		t.Errorf("apply --shard s2: exit %d\n%s%s", res.code, out, res.stderr)
	}
	if res = run("partitions", "apply", now); res.code != 0 || strings.Count(res.stdout, "+ create") != 3 {
		t.Errorf("apply: exit %d, want s1's 3 partitions created\n%s%s", res.code, res.stdout, res.stderr)
	}
	t.Logf("apply output:\n%s", res.stdout)
	if res := run("partitions", "plan", now, "--detailed-exitcode"); res.code != 0 {
		t.Errorf("plan after apply: exit %d, want no changes\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := run("partitions", "plan", "--now", "yesterday"); res.code == 0 || !strings.Contains(res.stderr, "RFC3339") {
		t.Errorf("bad --now: exit %d %s", res.code, res.stderr)
	}
	if res := run("partitions", "apply", now, "--shard", "s9"); res.code == 0 || !strings.Contains(res.stderr, "no such shard") {
		t.Errorf("unknown shard: exit %d %s", res.code, res.stderr)
	}
}

// partitionsCluster starts the fleet the partition commands' tests share: two shards with
// an events table partitioned by day, and an etcd holding cluster's catalog of them. The
// setup has a deadline of its own, so the test's starts once the fleet is ready.
func partitionsCluster(t *testing.T, cluster string) *cliCatalog {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	ctx := testContext(t, 2*time.Minute)
	var shards []catalog.Shard
	for i, pg := range pgs {
		pg.Exec(ctx, `CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id, created_at)) PARTITION BY RANGE (created_at)`)
		shards = append(shards, catalog.Shard{Name: []string{"s1", "s2"}[i], DSN: pg.DSNApp()})
	}
	cfg := catalog.Config{Cluster: cluster, Key: "tenant_id", Tables: []string{"events"},
		Partitions: []catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", Premake: 2}}}
	return newCatalog(t, ctx, cfg, shards, nil)
}
