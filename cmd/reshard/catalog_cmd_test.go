package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// catalogOnly is an etcd holding the catalog of cluster "demo", whose shards these tests
// never connect to: s1 (a DSN) owns :1000, s2 (a dsn_env) 1000:, with a partition spec and
// measured sizes.
func catalogOnly(t *testing.T) *cliCatalog {
	t.Helper()
	ctx := context.Background()
	cfg := catalog.Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"tenants", "orders", "events"},
		Partitions: []catalog.PartitionSpec{{Table: "events", Column: "created", Interval: "day", Premake: 7, Retention: "30d"}}}
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSNEnv: "RESHARD_TEST_S2_DSN"}}
	ranges := []catalog.Range{{Range: catalog.Below(1000), Shard: "s1"}, {Range: catalog.From(1000), Shard: "s2"}}
	env := newCatalog(t, ctx, cfg, shards, ranges)
	st, err := env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	ms := []catalog.ShardMeasurement{
		{Shard: "s1", At: at, Tables: map[string]catalog.TableStats{"orders": {Bytes: 4 << 20, Rows: 5000}},
			Tenants: map[int64]catalog.TenantLoad{7: {Bytes: 3 << 20, Rows: 4000}, 13: {Bytes: 1 << 20, Rows: 1000}}},
		{Shard: "s2", At: at, Tables: map[string]catalog.TableStats{"orders": {Bytes: 1 << 20, Rows: 1000}},
			Tenants: map[int64]catalog.TenantLoad{1001: {Bytes: 1 << 20, Rows: 1000}}},
	}
	if err := env.store.PutStats(ctx, catalog.ComputeStats(st, ms, 3, nil)); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestCatalogShowAndHistory: `catalog show` prints the catalog as JSON or text tables, and
// `catalog history` lists every change in order.
func TestCatalogShowAndHistory(t *testing.T) {
	run := catalogOnly(t).runner(t, context.Background())
	t.Run("show -o json is the catalog", func(t *testing.T) {
		res := run("catalog", "show", "-o", "json")
		var st catalog.State
		if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || len(st.Ranges) != 2 || st.Config.Partitions[0].Premake != 7 {
			t.Fatalf("catalog show -o json: %v\n%s", err, res.stdout)
		}
	})
	t.Run("show prints shards, ranges and specs as text", func(t *testing.T) {
		res := run("catalog", "show")
		for _, want := range []string{"cluster demo at etcd revision", "partitions of events by created: every day, 7 ahead, retention 30d", "$RESHARD_TEST_S2_DSN", "1000:"} {
			if res.code != 0 || !strings.Contains(res.stdout, want) {
				t.Errorf("catalog show lacks %q:\n%s", want, res.stdout)
			}
		}
	})
	t.Run("history lists the init and a shard's state change", func(t *testing.T) {
		if res := run("shard", "drain", "s2"); res.code != 0 {
			t.Fatalf("drain: %s", res.stderr)
		}
		res := run("catalog", "history", "-o", "json")
		var evs []catalog.Event
		if err := json.Unmarshal([]byte(res.stdout), &evs); err != nil || len(evs) != 2 || evs[1].Kind != catalog.EventShardState {
			t.Errorf("history: %v %s", err, res.stdout)
		}
		if res := run("catalog", "history"); res.code != 0 || !strings.Contains(res.stdout, "SEQ") || !strings.Contains(res.stdout, "active -> draining") {
			t.Errorf("history as text:\n%s", res.stdout)
		}
	})
}

// TestCatalogExportImport: an export restores the whole catalog, stats included, into an
// emptied cluster; import refuses to overwrite a catalog without --force and refuses a
// file that is not a backup, changing nothing.
func TestCatalogExportImport(t *testing.T) {
	env := catalogOnly(t)
	ctx := context.Background()
	run := env.runner(t, ctx)
	if err := env.store.PutHotKeyCustom(ctx, 13, map[string]float64{"read_qps": 50}); err != nil {
		t.Fatal(err)
	}
	if res := run("shard", "drain", "s2"); res.code != 0 {
		t.Fatalf("drain: %s", res.stderr)
	}
	dir := t.TempDir()
	res := run("catalog", "export")
	if res.code != 0 {
		t.Fatalf("export: %s", res.stderr)
	}
	backup := writeFile(t, dir, "backup.json", res.stdout)
	t.Run("import over a catalog needs --force", func(t *testing.T) {
		before := keyCount(t, env.cli, "/reshard/")
		if res := run("catalog", "import", backup); res.code != 1 || !strings.Contains(res.stderr, "--force") {
			t.Errorf("import over a catalog: %d %s", res.code, res.stderr)
		}
		if keyCount(t, env.cli, "/reshard/") != before {
			t.Error("a refused import changed the catalog")
		}
	})
	t.Run("import refuses a file that is not a backup", func(t *testing.T) {
		before := keyCount(t, env.cli, "/reshard/")
		if res := run("catalog", "import", writeFile(t, dir, "junk.json", `{"format":"nope"}`), "--force"); res.code != 1 || !strings.Contains(res.stderr, "format") {
			t.Errorf("import of junk: %d %s", res.code, res.stderr)
		}
		if keyCount(t, env.cli, "/reshard/") != before {
			t.Error("a refused import changed the catalog")
		}
	})
	t.Run("import restores an emptied cluster", func(t *testing.T) {
		if _, err := env.cli.Delete(ctx, "/reshard/demo/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		if res := run("catalog", "show"); res.code != 1 || !strings.Contains(res.stderr, "reshard init") {
			t.Errorf("show of a missing catalog: %d %s", res.code, res.stderr)
		}
		if res := run("catalog", "import", backup); res.code != 0 || !strings.Contains(res.stdout, "restored from") {
			t.Fatalf("import: %s", res.stderr)
		}
		res := run("catalog", "show", "-o", "json")
		var back catalog.State
		if err := json.Unmarshal([]byte(res.stdout), &back); err != nil || len(back.Shards) != 2 || back.Shards["s2"].State != catalog.ShardDraining {
			t.Errorf("after import: %v %s", err, res.stdout)
		}
		res = run("stats", "show", "-o", "json")
		var stats catalog.Stats
		if err := json.Unmarshal([]byte(res.stdout), &stats); err != nil || len(stats.Shards) != 2 || !hasCustom(stats.HotKeys, 13, "read_qps", 50) {
			t.Errorf("stats after import: %v %s", err, res.stdout)
		}
	})
}

func hasCustom(hks []catalog.HotKey, key int64, metric string, v float64) bool {
	for _, h := range hks {
		if h.Key == key && h.Custom[metric] == v {
			return true
		}
	}
	return false
}

// TestCatalogShowPrintsKeyTypeAndDistribution: `catalog show` names the key's type and the
// distribution, as text and in -o json's config, also for a catalog written before they
// were stored (bigint by range), and each table keyed by a column of its own.
func TestCatalogShowPrintsKeyTypeAndDistribution(t *testing.T) {
	srv, cli := testenv.Etcd(t)
	ctx := context.Background()
	for _, c := range []struct {
		cfg        catalog.Config
		typ, dist  string
		textWanted []string
	}{
		{catalog.Config{Cluster: "old", Key: "tenant_id", Tables: []string{"orders"}}, "bigint", "range",
			[]string{"key tenant_id of type bigint, distribution range (ranges over the key); sharded tables: orders"}},
		{catalog.Config{Cluster: "hashed", Key: "company_id", Tables: []string{"companies", "campaigns"},
			TableKeys: map[string]string{"companies": "id"}, KeyType: catalog.KeyUUID, Distribution: catalog.DistHash}, "uuid", "hash",
			[]string{"key company_id of type uuid, distribution hash (ranges over uuid_hash_extended(key, 0)); sharded tables: companies (key id), campaigns"}},
	} {
		t.Run(c.cfg.Cluster, func(t *testing.T) {
			run := addCatalog(t, ctx, srv.Endpoint(), cli, c.cfg, []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}}, nil).runner(t, ctx)
			res := run("catalog", "show", "-o", "json")
			var got struct {
				Config map[string]any `json:"config"`
			}
			if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || got.Config["key_type"] != c.typ || got.Config["distribution"] != c.dist {
				t.Errorf("catalog show -o json: %v, config %v; want key_type %s, distribution %s", err, got.Config, c.typ, c.dist)
			}
			res = run("catalog", "show")
			for _, w := range c.textWanted {
				if res.code != 0 || !strings.Contains(res.stdout, w) {
					t.Errorf("catalog show lacks %q:\n%s", w, res.stdout)
				}
			}
		})
	}
}
