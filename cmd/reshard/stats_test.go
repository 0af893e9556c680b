package main

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/planner"
)

// loadSkew puts tenants lo..lo+49 on a shard; big is 50x the others in bytes.
func loadSkew(ctx context.Context, pg *testenv.PG, lo, big int64) {
	pg.Exec(ctx, fmt.Sprintf(`
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(%[1]d, %[1]d + 49) g;
INSERT INTO orders SELECT %[1]d + g %% 50, g, repeat('o', 100) FROM generate_series(1, 5000) g;
INSERT INTO orders SELECT %[2]d, 100000 + g, repeat('b', 100) FROM generate_series(1, 5000) g;
INSERT INTO events SELECT %[1]d + g %% 50, g, date '2025-03-01' + (g %% 500) FROM generate_series(1, 3000) g;
ANALYZE;`, lo, big))
}

// skewedFleet is two shards with cliSchema, s1 holding tenants 1..50 (7 big) on range :1000
// and s2 tenants 1000..1049 (1001 big) on 1000:, and their catalog, cluster "demo".
func skewedFleet(t *testing.T) (map[string]*testenv.PG, *cliCatalog) {
	pgs := testenv.Postgres(t, 2)
	ctx := context.Background()
	for _, pg := range pgs {
		pg.Exec(ctx, cliSchema)
	}
	loadSkew(ctx, pgs[0], 1, 7)
	loadSkew(ctx, pgs[1], 1000, 1001)
	shards := []catalog.Shard{{Name: "s1", DSN: pgs[0].DSNApp()}, {Name: "s2", DSN: pgs[1].DSNApp()}}
	ranges := []catalog.Range{{Range: catalog.Below(1000), Shard: "s1"}, {Range: catalog.From(1000), Shard: "s2"}}
	cfg := catalog.Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"tenants", "orders", "events"}}
	return map[string]*testenv.PG{"s1": pgs[0], "s2": pgs[1]}, newCatalog(t, ctx, cfg, shards, ranges)
}

// hammer writes to tenant 13 (small in bytes) until the returned stop is called, which
// says how many writes it made.
func hammer(ctx context.Context, pg *testenv.PG) (stop func() int64) {
	pool := pg.Pool(ctx)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); wctx.Err() == nil; i++ {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO orders VALUES (13, $1, 'hot')`, 900000+i)
			b.Queue(`UPDATE orders SET note = 'hotter' WHERE tenant_id = 13 AND id = $1`, 900000+i)
			b.Queue(`INSERT INTO events VALUES (13, $1, '2026-05-01')`, 900000+i)
			if err := pool.SendBatch(wctx, b).Close(); err != nil {
				return
			}
			written.Add(3)
		}
	}()
	return func() int64 {
		cancel()
		wg.Wait()
		return written.Load()
	}
}

// TestStatsCollectMeasuresEveryShard: `stats collect` with a writer hammering tenant 13
// finds it the hottest by writes, the big tenants of both shards among the hot keys by
// bytes, per range keys, rows and writes, and leaves no replication slot behind; the
// stats are at their documented keys.
func TestStatsCollectMeasuresEveryShard(t *testing.T) {
	pgs, env := skewedFleet(t)
	ctx := context.Background()
	stop := hammer(ctx, pgs["s1"])
	time.Sleep(200 * time.Millisecond)
	res := runCLI(t, ctx, append(env.global, "stats", "collect", "--sample-writes", "3s", "--top", "3", "-o", "json")...)
	written := stop()
	if res.code != 0 {
		t.Fatalf("stats collect: %d %s", res.code, res.stderr)
	}
	var stats catalog.Stats
	if err := json.Unmarshal([]byte(res.stdout), &stats); err != nil {
		t.Fatalf("stats JSON: %v\n%s", err, res.stdout)
	}
	t.Run("the written tenant is the hottest by writes", func(t *testing.T) {
		if len(stats.HotKeys) == 0 || stats.HotKeys[0].Key != 13 || stats.HotKeys[0].WritesPerSec <= 0 {
			t.Fatalf("hot keys by writes: %+v", stats.HotKeys)
		}
		t.Logf("tenant 13: %.0f writes/s sampled (the writer made %d writes in all)", stats.HotKeys[0].WritesPerSec, written)
	})
	t.Run("the big tenants of both shards are hot by bytes", func(t *testing.T) {
		by := map[int64]catalog.HotKey{}
		for _, h := range stats.HotKeys {
			by[h.Key] = h
		}
		if _, ok := by[7]; !ok {
			t.Errorf("the big tenant 7 is not a hot key: %+v", stats.HotKeys)
		}
		if _, ok := by[1001]; !ok {
			t.Errorf("the big tenant 1001 (on s2) is not a hot key: %+v", stats.HotKeys)
		}
		if by[7].Bytes <= by[13].Bytes || by[7].Shard != "s1" || by[1001].Shard != "s2" {
			t.Errorf("hot key bytes/shards: 7=%+v 13=%+v 1001=%+v", by[7], by[13], by[1001])
		}
	})
	t.Run("ranges and shards are measured", func(t *testing.T) {
		if len(stats.Ranges) != 2 || stats.Ranges[0].Keys != 50 || stats.Ranges[1].Keys != 50 || len(stats.HotKeys) == 0 || stats.Ranges[0].WritesPerSec < stats.HotKeys[0].WritesPerSec {
			t.Errorf("range stats: %+v", stats.Ranges)
		}
		if len(stats.Ranges) != 2 || stats.Ranges[1].Rows != 50+10000+3000 || stats.Shards["s2"].Rows != stats.Ranges[1].Rows || stats.Shards["s2"].Tables["events"].Bytes == 0 {
			t.Errorf("s2 stats: ranges %+v shard %+v", stats.Ranges, stats.Shards["s2"])
		}
	})
	t.Run("no replication slot is left behind", func(t *testing.T) {
		for name, pg := range pgs {
			var n int
			c, err := pgx.Connect(ctx, pg.DSNApp())
			if err != nil {
				t.Fatal(err)
			}
			c.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&n)
			c.Close(ctx)
			if n != 0 {
				t.Errorf("%s: %d replication slots left behind", name, n)
			}
		}
	})
	t.Run("stats are stored at their keys", func(t *testing.T) {
		for _, k := range []string{"stats/shards/s1", "stats/ranges/" + catalog.KeyHex(1000), "stats/hotkeys/13"} {
			if keyCount(t, env.cli, "/reshard/demo/"+k) != 1 {
				t.Errorf("no key /reshard/demo/%s", k)
			}
		}
	})
}

// TestStatsPutAndShow: `stats put` records an application's own numbers for a key, which
// `stats show` prints with the hot keys; a bad metric name is refused.
func TestStatsPutAndShow(t *testing.T) {
	_, env := skewedFleet(t)
	ctx := context.Background()
	run := env.runner(t, ctx)
	if res := run("stats", "collect", "--sample-writes", "0"); res.code != 0 {
		t.Fatalf("stats collect: %s", res.stderr)
	}
	if res := run("stats", "put", "--key", "13", "--metric", "read_qps=50", "--metric", "p99_ms=12.5"); res.code != 0 {
		t.Fatalf("stats put: %s", res.stderr)
	}
	if res := run("stats", "put", "--key", "13", "--metric", "read qps=1"); res.code != 1 || !strings.Contains(res.stderr, "metric name") {
		t.Errorf("bad metric: %d %s", res.code, res.stderr)
	}
	res := run("stats", "show")
	if res.code != 0 || !strings.Contains(res.stdout, "read_qps=50") || !strings.Contains(res.stdout, "p99_ms=12.5") || !strings.Contains(res.stdout, "HOT KEY (by writes)") {
		t.Errorf("stats show:\n%s%s", res.stdout, res.stderr)
	}
	res = run("stats", "show", "--by", "bytes", "-o", "json")
	var stats catalog.Stats
	if err := json.Unmarshal([]byte(res.stdout), &stats); err != nil || len(stats.HotKeys) == 0 || (stats.HotKeys[0].Key != 7 && stats.HotKeys[0].Key != 1001) {
		t.Errorf("stats show --by bytes: %v %s", err, res.stdout)
	}
}

// uuidSchema is a uuid-keyed schema for a catalog by hash.
const uuidSchema = `
CREATE TABLE tenants (tenant_id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (tenant_id uuid NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
`

// hashFleet is two shards with uuidSchema and a catalog by hash of uuid keys (s1 the
// negative hashes, s2 the rest), cluster "demo". Tenants are md5(g)::uuid for g in
// 1..80, each on the shard its hash belongs to, with 20 orders; big, the first of them on
// s1, has 4000 more. It returns the shards' databases, the catalog and big.
func hashFleet(t *testing.T) (map[string]*testenv.PG, *cliCatalog, string) {
	pgs := testenv.Postgres(t, 2)
	ctx := context.Background()
	big := ""
	for g := 1; big == ""; g++ {
		u := md5.Sum([]byte(strconv.Itoa(g)))
		if catalog.HashUUID(u) < 0 {
			big = catalog.UUIDKey(u).String()
		}
	}
	for i, pg := range pgs {
		side := []string{"< 0", ">= 0"}[i]
		pg.Exec(ctx, uuidSchema+fmt.Sprintf(`
INSERT INTO tenants SELECT u, 'tenant ' || g FROM (SELECT g, md5(g::text)::uuid u FROM generate_series(1, 80) g) x WHERE uuid_hash_extended(u, 0) %[1]s;
INSERT INTO orders SELECT tenant_id, n, repeat('o', 100) FROM tenants, generate_series(1, 20) n;
INSERT INTO orders SELECT tenant_id, 1000 + n, repeat('b', 100) FROM tenants, generate_series(1, 4000) n WHERE tenant_id = '%[2]s';
ANALYZE;`, side, big))
	}
	shards := []catalog.Shard{{Name: "s1", DSN: pgs[0].DSNApp()}, {Name: "s2", DSN: pgs[1].DSNApp()}}
	cfg := catalog.Config{Cluster: "demo", Key: "tenant_id", KeyType: catalog.KeyUUID, Distribution: catalog.DistHash, Tables: []string{"tenants", "orders"}}
	return map[string]*testenv.PG{"s1": pgs[0], "s2": pgs[1]}, newCatalog(t, ctx, cfg, shards, catalog.EvenRanges([]string{"s1", "s2"})), big
}

// TestStatsAndPlanNameHashedHotTenants: on a uuid-keyed catalog by hash, `stats collect`
// records each hot tenant's uuid, and `stats show` (text and JSON) and `plan` (its reason
// and isolate_tenant) name the big tenant by its uuid beside its hash; `stats put --key`
// takes a uuid (any case) and hashes it as the catalog does, and refuses a key that is not
// a uuid in one line, writing nothing. Every tenant's rows stay on their shard (nothing
// here moves data, and nothing may).
func TestStatsAndPlanNameHashedHotTenants(t *testing.T) {
	pgs, env, big := hashFleet(t)
	ctx := context.Background()
	run := env.runner(t, ctx)
	u, _ := catalog.ParseKey(catalog.KeyUUID, big)
	name := big + " (hash " + strconv.FormatInt(catalog.HashKey(u), 10) + ")"

	if res := run("stats", "collect", "--sample-writes", "0", "--top", "3"); res.code != 0 || !strings.Contains(res.stdout, name) {
		t.Fatalf("stats collect: exit %d, want %q among the hot keys\n%s%s", res.code, name, res.stdout, res.stderr)
	}
	res := run("stats", "show", "--by", "bytes")
	if first := strings.SplitN(res.stdout[strings.Index(res.stdout, "HOT KEY"):], "\n", 3)[1]; res.code != 0 || !strings.HasPrefix(first, name+"  ") {
		t.Errorf("stats show --by bytes: the heaviest hot key is not named %q:\n%s%s", name, res.stdout, res.stderr)
	}
	var stats catalog.Stats
	res = run("stats", "show", "--by", "bytes", "-o", "json")
	if err := json.Unmarshal([]byte(res.stdout), &stats); err != nil || len(stats.HotKeys) != 3 || stats.HotKeys[0].Tenant != big {
		t.Errorf("stats show -o json: %v, want 3 hot keys each named, the first %s:\n%s", err, big, res.stdout)
	}
	for _, h := range stats.HotKeys {
		if k, err := catalog.ParseKey(catalog.KeyUUID, h.Tenant); err != nil || catalog.HashKey(k) != h.Key {
			t.Errorf("hot key %d named %q, which does not hash to it (%v)", h.Key, h.Tenant, err)
		}
	}

	res = run("plan", "-o", "json")
	var p planner.Plan
	if err := json.Unmarshal([]byte(res.stdout), &p); err != nil || len(p.Steps) == 0 || p.Steps[0].IsolateTenant != big {
		t.Fatalf("plan -o json: %v, want the first step to isolate %s:\n%s%s", err, big, res.stdout, res.stderr)
	}
	res = run("plan")
	t.Logf("$ reshard plan\n%s", res.stdout)
	if !strings.Contains(res.stdout, "tenant "+name+" alone carries") {
		t.Errorf("plan: no reason naming %q:\n%s%s", name, res.stdout, res.stderr)
	}

	if res := run("stats", "put", "--key", strings.ToUpper(big), "--metric", "read_qps=5"); res.code != 0 || res.stdout != "tenant "+name+": read_qps=5 recorded\n" {
		t.Errorf("stats put --key UUID: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := run("stats", "put", "--key", "42", "--metric", "read_qps=5"); res.code == 0 || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, `"42" is not a uuid`) {
		t.Errorf("stats put --key 42: exit %d, want one line refusing it\n%s", res.code, res.stderr)
	}
	after, err := env.store.LoadStats(ctx)
	if err != nil || len(after.HotKeys) != 3 {
		t.Fatalf("hot keys after stats put: %v %+v", err, after)
	}
	for _, h := range after.HotKeys {
		if want := map[bool]float64{true: 5}[h.Tenant == big]; h.Custom["read_qps"] != want {
			t.Errorf("hot key %s: custom %v, want read_qps %v", h.Name(), h.Custom, want)
		}
	}
	checkHashFleetRows(t, ctx, pgs, big)
}

// checkHashFleetRows checks every tenant's rows on both shards of hashFleet: each shard
// holds exactly its side's tenants with 20 orders each, big 4020.
func checkHashFleetRows(t *testing.T, ctx context.Context, pgs map[string]*testenv.PG, big string) {
	t.Helper()
	for name, side := range map[string]string{"s1": "< 0", "s2": ">= 0"} {
		c, err := pgx.Connect(ctx, pgs[name].DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		var bad int
		err = c.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT md5(g::text)::uuid u FROM generate_series(1, 80) g) x
			LEFT JOIN LATERAL (SELECT count(*) n FROM orders o WHERE o.tenant_id = u) o ON true
			WHERE o.n <> CASE WHEN NOT (uuid_hash_extended(u, 0) %s) THEN 0 WHEN u = '%s' THEN 4020 ELSE 20 END`, side, big)).Scan(&bad)
		c.Close(ctx)
		if err != nil || bad != 0 {
			t.Errorf("%s: %d tenants with the wrong number of orders (%v)", name, bad, err)
		}
	}
}
