package pgmeta

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestCheckShardsListsEveryProblemByShard: every shard is checked, and each problem says
// its shard, sorted: a bad table on a reachable shard, a shard that does not answer (its
// password masked) and one whose dsn_env is empty.
func TestCheckShardsListsEveryProblemByShard(t *testing.T) {
	pg, _ := shardWith(t, schema)
	ctx := context.Background()
	t.Setenv("RESHARD_TEST_DOWN_DSN", closedPortDSN(t))
	shards := []catalog.Shard{
		{Name: "s1", DSN: pg.DSNApp()},
		{Name: "s2", DSNEnv: "RESHARD_TEST_DOWN_DSN"},
		{Name: "s3", DSNEnv: "RESHARD_TEST_UNSET_DSN"},
	}
	ps := CheckShards(ctx, shards, catalog.RangeOn("tenant_id"), []string{"tenants", "nokey"})
	want := []string{"shard s1: table nokey has no column tenant_id", "shard s2: cannot connect to", "shard s3: environment variable RESHARD_TEST_UNSET_DSN is empty or unset"}
	if len(ps) != len(want) {
		t.Fatalf("problems %q, want %d", ps, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(ps[i], w) {
			t.Errorf("problem %d = %q, want it to start %q", i, ps[i], w)
		}
	}
	if all := strings.Join(ps, "\n"); strings.Contains(all, "hunter2") || !strings.Contains(all, "password=****") {
		t.Errorf("password not masked: %s", all)
	}
	if ps := CheckShards(ctx, shards[:1], catalog.RangeOn("tenant_id"), []string{"tenants", "orders"}); len(ps) != 0 {
		t.Errorf("a good shard has problems: %q", ps)
	}
}

// TestMeasureShardsMeasuresEveryShard: every shard is measured, in shard order, with its
// writes sampled; a shard that cannot be measured is a problem naming it, and the sample
// leaves no replication slot behind.
func TestMeasureShardsMeasuresEveryShard(t *testing.T) {
	pg, _ := shardWith(t, schema+`
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, 10) g;
INSERT INTO orders SELECT 1 + g % 10, g, 'x' FROM generate_series(1, 1000) g;
ANALYZE;`)
	ctx := context.Background()
	cfg := catalog.Config{Key: "tenant_id", Tables: []string{"tenants", "orders"}}
	st := &catalog.State{Config: cfg, Shards: map[string]catalog.Shard{
		"s2": {Name: "s2", DSN: pg.DSNApp()},
		"s1": {Name: "s1", DSN: pg.DSNApp()}, // the same database twice: two shards' worth
	}}
	ms, ps := MeasureShards(ctx, st, FleetMeasureOptions{SampleWrites: time.Second})
	if len(ps) != 0 || len(ms) != 2 || ms[0].Shard != "s1" || ms[1].Shard != "s2" {
		t.Fatalf("measurements %+v, problems %q", ms, ps)
	}
	for _, m := range ms {
		if m.Tables["orders"].Rows != 1000 || len(m.Tenants) != 10 || m.Tenants[1].Bytes == 0 || m.SampleSeconds <= 0 {
			t.Errorf("%s: %+v", m.Shard, m)
		}
	}
	assertNoSlots(t, ctx, pg.DSNApp())
	t.Setenv("RESHARD_TEST_DOWN_DSN", closedPortDSN(t))
	st.Shards["s3"] = catalog.Shard{Name: "s3", DSNEnv: "RESHARD_TEST_DOWN_DSN"}
	_, ps = MeasureShards(ctx, st, FleetMeasureOptions{})
	if len(ps) != 1 || !strings.HasPrefix(ps[0], "shard s3: cannot connect to") || strings.Contains(ps[0], "hunter2") {
		t.Errorf("problems %q, want one for s3 with its password masked", ps)
	}
}

// TestConnectShardNamesTheShard: a connection that cannot be made says which shard, with
// the DSN's password masked; a shard without a DSN says how to give it one.
func TestConnectShardNamesTheShard(t *testing.T) {
	ctx := context.Background()
	t.Setenv("RESHARD_TEST_DOWN_DSN", closedPortDSN(t))
	_, err := ConnectShard(ctx, catalog.Shard{Name: "s2", DSNEnv: "RESHARD_TEST_DOWN_DSN"})
	if err == nil || !strings.HasPrefix(err.Error(), "shard s2: cannot connect to") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("unreachable shard: %v", err)
	}
	_, err = ConnectShard(ctx, catalog.Shard{Name: "s3", DSNEnv: "RESHARD_TEST_UNSET_DSN"})
	if err == nil || !strings.Contains(err.Error(), "shard s3: environment variable RESHARD_TEST_UNSET_DSN is empty or unset") {
		t.Errorf("shard without a DSN: %v", err)
	}
}
