package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// cliSchema is a small multi-tenant schema (with a date-partitioned table) plus tables
// that break the rules, for the bad-input cases.
const cliSchema = `
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL,
  PRIMARY KEY (tenant_id, id, created)) PARTITION BY RANGE (created);
CREATE TABLE events_p2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_p2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE nokey (id bigint PRIMARY KEY);
CREATE TABLE badri (id bigint PRIMARY KEY, tenant_id bigint NOT NULL);
`

// loadSkew puts tenants lo..lo+49 on a shard; big is 50x the others in bytes.
func loadSkew(ctx context.Context, pg *testenv.PG, lo, big int64) {
	pg.Exec(ctx, fmt.Sprintf(`
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(%[1]d, %[1]d + 49) g;
INSERT INTO orders SELECT %[1]d + g %% 50, g, repeat('o', 100) FROM generate_series(1, 5000) g;
INSERT INTO orders SELECT %[2]d, 100000 + g, repeat('b', 100) FROM generate_series(1, 5000) g;
INSERT INTO events SELECT %[1]d + g %% 50, g, date '2025-03-01' + (g %% 500) FROM generate_series(1, 3000) g;
ANALYZE;`, lo, big))
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

func keyCount(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func TestCatalogCLI(t *testing.T) {
	pgs := testenv.Postgres(t, 3)
	srv, ecli := testenv.Etcd(t)
	ctx := context.Background()
	for _, pg := range pgs {
		pg.Exec(ctx, cliSchema)
	}
	loadSkew(ctx, pgs[0], 1, 7)       // s1: tenants 1..50, tenant 7 big
	loadSkew(ctx, pgs[1], 1000, 1001) // s2: tenants 1000..1049, tenant 1001 big
	// pgs[2] runs with wal_level=replica.
	pgs[2].Exec(ctx, "ALTER SYSTEM SET wal_level = replica")
	if err := pgs[2].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RESHARD_TEST_S2_DSN", pgs[1].DSNApp())
	etcdArgs := []string{"--etcd", srv.Endpoint()}
	// init takes the cluster from the file; the other commands are told.
	run := func(args ...string) cliResult {
		t.Helper()
		if args[0] != "init" {
			args = append([]string{"--cluster", "demo"}, args...)
		}
		return runCLI(t, ctx, append(etcdArgs, args...)...)
	}
	dir := t.TempDir()
	goodYAML := fmt.Sprintf(`cluster: demo
key: tenant_id
tables: [tenants, orders, events]
shards:
  - name: s1
    dsn: %q
  - name: s2
    dsn_env: RESHARD_TEST_S2_DSN
ranges:
  - {range: ":1000", shard: s1}
  - {range: "1000:", shard: s2}
partitions:
  - {table: events, column: created, interval: day, premake: 7, retention: 30d}
`, pgs[0].DSNApp())
	good := writeFile(t, dir, "cluster.yaml", goodYAML)

	// Bad inputs first: each is one clear error and writes nothing.
	s1 := fmt.Sprintf("    dsn: %q\n", pgs[0].DSNApp())
	bad := func(tables, shards, ranges string) string {
		return "cluster: bad\nkey: tenant_id\ntables: [" + tables + "]\nshards:\n" + shards + ranges
	}
	t.Setenv("RESHARD_TEST_UNREACHABLE_DSN", fmt.Sprintf("host=127.0.0.1 port=%d user=app password=hunter2 dbname=app connect_timeout=2", closedPort(t)))
	badCases := []struct {
		name, yaml string
		args       []string
		want       []string
	}{
		{"overlapping ranges", bad("tenants", "  - name: s1\n"+s1, "ranges:\n  - {range: \":100\", shard: s1}\n  - {range: \"50:\", shard: s1}\n"), nil,
			[]string{"ranges :100 and 50: overlap"}},
		{"gap", bad("tenants", "  - name: s1\n"+s1, "ranges:\n  - {range: \":100\", shard: s1}\n  - {range: \"200:\", shard: s1}\n"), nil,
			[]string{"gap between :100 and 200:"}},
		{"unknown shard", bad("tenants", "  - name: s1\n"+s1, "ranges:\n  - {range: \":\", shard: s9}\n"), nil,
			[]string{`unknown shard "s9"`}},
		{"unreachable shard, password masked", bad("tenants", "  - name: s1\n    dsn_env: RESHARD_TEST_UNREACHABLE_DSN\n", ""), nil,
			[]string{"shard s1: cannot connect to", "password=****"}},
		{"password in dsn", bad("tenants", "  - name: s1\n    dsn: \"host=h password=hunter2\"\n", ""), nil,
			[]string{"carries a password", "dsn_env"}},
		{"empty dsn_env", bad("tenants", "  - name: s1\n    dsn_env: RESHARD_TEST_UNSET_DSN\n", ""), nil,
			[]string{"RESHARD_TEST_UNSET_DSN is empty or unset"}},
		{"wal_level", bad("tenants", fmt.Sprintf("  - name: s3\n    dsn: %q\n", pgs[2].DSNApp()), ""), nil,
			[]string{"shard s3: wal_level is replica, not logical", "ALTER SYSTEM SET wal_level = logical"}},
		{"missing table", bad("tenants, nosuch", "  - name: s1\n"+s1, ""), nil,
			[]string{"table public.nosuch does not exist"}},
		{"missing key column", bad("nokey", "  - name: s1\n"+s1, ""), nil,
			[]string{"table nokey has no column tenant_id"}},
		{"replica identity without key", bad("badri", "  - name: s1\n"+s1, ""), nil,
			[]string{"does not include tenant_id", "REPLICA IDENTITY USING INDEX"}},
		{"malformed YAML", "cluster: bad\ntables: [a, b\nshards:\n", nil,
			[]string{"is not a valid cluster file", "line"}},
		{"unknown field", "cluster: bad\nshrads: []\n", nil,
			[]string{"field shrads not found"}},
		{"etcd unreachable", goodYAML, []string{"--etcd", fmt.Sprintf("127.0.0.1:%d", closedPort(t))},
			[]string{"etcd unreachable at 127.0.0.1:"}},
	}
	for _, tc := range badCases {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			f := writeFile(t, dir, "bad.yaml", tc.yaml)
			var res cliResult
			if tc.args != nil {
				res = runCLI(t, ctx, append(tc.args, "init", "-f", f)...)
			} else {
				res = run("init", "-f", f)
			}
			if res.code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", res.code, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if strings.Contains(res.stderr, "hunter2") || strings.Contains(res.stdout, "hunter2") {
				t.Errorf("password leaked: %s", res.stderr)
			}
			if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n != 0 {
				t.Errorf("want one line, got %d:\n%s", n+1, res.stderr)
			}
			if n := keyCount(t, ecli, "/reshard/"); n != 0 {
				t.Fatalf("a refused init wrote %d keys", n)
			}
		})
	}
	// Several problems at once are all listed.
	multi := writeFile(t, dir, "multi.yaml", bad("tenants, nokey, badri", "  - name: s1\n"+s1+fmt.Sprintf("  - name: s3\n    dsn: %q\n", pgs[2].DSNApp()), ""))
	res := run("init", "-f", multi)
	if res.code != 1 || !strings.Contains(res.stderr, "problems, nothing was written") ||
		!strings.Contains(res.stderr, "shard s1: table nokey") || !strings.Contains(res.stderr, "shard s3: wal_level") {
		t.Fatalf("multi-problem init: %d %s", res.code, res.stderr)
	}
	t.Logf("init with several problems says:\n%s", res.stderr)

	// A good init.
	res = run("init", "-f", good)
	if res.code != 0 {
		t.Fatalf("init: %d %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "2 shards, 2 ranges") || !strings.Contains(res.stdout, "$RESHARD_TEST_S2_DSN") {
		t.Errorf("init output:\n%s", res.stdout)
	}
	// The documented keys, with JSON values.
	for _, k := range []string{"config", "shards/s1", "shards/s2", "ranges/" + catalog.KeyHex(-1<<63), "ranges/" + catalog.KeyHex(1000), "history/00000000000000000001", "seq"} {
		resp, err := ecli.Get(ctx, "/reshard/demo/"+k)
		if err != nil || len(resp.Kvs) != 1 || !json.Valid(resp.Kvs[0].Value) {
			t.Errorf("key /reshard/demo/%s: %v %v", k, resp, err)
		}
	}
	resp, _ := ecli.Get(ctx, "/reshard/demo/shards/s2")
	if strings.Contains(string(resp.Kvs[0].Value), "port=") {
		t.Errorf("the DSN of a dsn_env shard was stored: %s", resp.Kvs[0].Value)
	}
	before := keyCount(t, ecli, "/reshard/")
	if res = run("init", "-f", good); res.code != 1 || !strings.Contains(res.stderr, "--force") {
		t.Errorf("second init: %d %s", res.code, res.stderr)
	}
	if keyCount(t, ecli, "/reshard/") != before {
		t.Error("a refused init changed the catalog")
	}
	// --force refuses while a migration is in progress: its journal is what knows how to
	// remove its slot, publication, fence and copied rows.
	live, _ := json.Marshal(catalog.Migration{ID: "m_live", Kind: "move", Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp})
	if _, err := ecli.Put(ctx, "/reshard/demo/"+catalog.MigrationKey("m_live"), string(live)); err != nil {
		t.Fatal(err)
	}
	before = keyCount(t, ecli, "/reshard/")
	if res = run("init", "-f", good, "--force"); res.code != 1 || !strings.Contains(res.stderr, "m_live (catching_up)") || !strings.Contains(res.stderr, "reshard cancel") {
		t.Errorf("init --force with a live migration: %d %s", res.code, res.stderr)
	}
	if keyCount(t, ecli, "/reshard/") != before {
		t.Error("a refused init --force changed the catalog")
	}
	if _, err := ecli.Delete(ctx, "/reshard/demo/"+catalog.MigrationKey("m_live")); err != nil {
		t.Fatal(err)
	}

	// stats collect with a writer hammering tenant 13 (small in bytes).
	pool := pgs[0].Pool(ctx)
	wctx, stopWriter := context.WithCancel(ctx)
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
	time.Sleep(200 * time.Millisecond)
	res = run("stats", "collect", "--sample-writes", "3s", "--top", "3", "-o", "json")
	stopWriter()
	wg.Wait()
	if res.code != 0 {
		t.Fatalf("stats collect: %d %s", res.code, res.stderr)
	}
	var stats catalog.Stats
	if err := json.Unmarshal([]byte(res.stdout), &stats); err != nil {
		t.Fatalf("stats JSON: %v\n%s", err, res.stdout)
	}
	if len(stats.HotKeys) == 0 || stats.HotKeys[0].Key != 13 || stats.HotKeys[0].WritesPerSec <= 0 {
		t.Fatalf("hot keys by writes: %+v", stats.HotKeys)
	}
	t.Logf("tenant 13: %.0f writes/s sampled (the writer made %d writes in all)", stats.HotKeys[0].WritesPerSec, written.Load())
	byBytes := map[int64]catalog.HotKey{}
	for _, h := range stats.HotKeys {
		byBytes[h.Key] = h
	}
	if _, ok := byBytes[7]; !ok {
		t.Errorf("the big tenant 7 is not a hot key: %+v", stats.HotKeys)
	}
	if _, ok := byBytes[1001]; !ok {
		t.Errorf("the big tenant 1001 (on s2) is not a hot key: %+v", stats.HotKeys)
	}
	if byBytes[7].Bytes <= byBytes[13].Bytes || byBytes[7].Shard != "s1" || byBytes[1001].Shard != "s2" {
		t.Errorf("hot key bytes/shards: 7=%+v 13=%+v 1001=%+v", byBytes[7], byBytes[13], byBytes[1001])
	}
	if len(stats.Ranges) != 2 || stats.Ranges[0].Keys != 50 || stats.Ranges[1].Keys != 50 || stats.Ranges[0].WritesPerSec < stats.HotKeys[0].WritesPerSec {
		t.Errorf("range stats: %+v", stats.Ranges)
	}
	if stats.Ranges[1].Rows != 50+10000+3000 || stats.Shards["s2"].Rows != stats.Ranges[1].Rows || stats.Shards["s2"].Tables["events"].Bytes == 0 {
		t.Errorf("s2 stats: range %+v shard %+v", stats.Ranges[1], stats.Shards["s2"])
	}
	for i, pg := range pgs[:2] {
		var n int
		c, err := pgx.Connect(ctx, pg.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		c.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&n)
		c.Close(ctx)
		if n != 0 {
			t.Errorf("shard %d: %d replication slots left behind", i+1, n)
		}
	}
	for _, k := range []string{"stats/shards/s1", "stats/ranges/" + catalog.KeyHex(1000), "stats/hotkeys/13"} {
		if keyCount(t, ecli, "/reshard/demo/"+k) != 1 {
			t.Errorf("no key /reshard/demo/%s", k)
		}
	}

	// stats put / show.
	if res = run("stats", "put", "--key", "13", "--metric", "read_qps=50", "--metric", "p99_ms=12.5"); res.code != 0 {
		t.Fatalf("stats put: %s", res.stderr)
	}
	if res = run("stats", "put", "--key", "13", "--metric", "read qps=1"); res.code != 1 || !strings.Contains(res.stderr, "metric name") {
		t.Errorf("bad metric: %d %s", res.code, res.stderr)
	}
	res = run("stats", "show")
	if res.code != 0 || !strings.Contains(res.stdout, "read_qps=50") || !strings.Contains(res.stdout, "HOT KEY (by writes)") {
		t.Errorf("stats show:\n%s%s", res.stdout, res.stderr)
	}
	t.Logf("stats show:\n%s", res.stdout)

	// catalog show, history, shard list, drain.
	res = run("catalog", "show", "-o", "json")
	var st catalog.State
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || len(st.Ranges) != 2 || st.Config.Partitions[0].Premake != 7 {
		t.Fatalf("catalog show -o json: %v\n%s", err, res.stdout)
	}
	if res = run("catalog", "show"); res.code != 0 || !strings.Contains(res.stdout, "1000:") {
		t.Errorf("catalog show:\n%s", res.stdout)
	}
	t.Logf("catalog show:\n%s", res.stdout)
	if res = run("shard", "drain", "s2"); res.code != 0 {
		t.Fatalf("drain: %s", res.stderr)
	}
	if res = run("shard", "drain", "s9"); res.code != 1 || !strings.Contains(res.stderr, `"s9"`) {
		t.Errorf("drain of unknown shard: %d %s", res.code, res.stderr)
	}
	res = run("shard", "list", "-o", "json")
	var rows []shardRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil || len(rows) != 2 || rows[1].State != catalog.ShardDraining || rows[1].Bytes == nil {
		t.Errorf("shard list: %v %s", err, res.stdout)
	}
	res = run("catalog", "history", "-o", "json")
	var evs []catalog.Event
	if err := json.Unmarshal([]byte(res.stdout), &evs); err != nil || len(evs) != 2 || evs[1].Kind != catalog.EventShardState {
		t.Errorf("history: %v %s", err, res.stdout)
	}

	// shard add: a shard that fails the checks is not added; a good one is.
	before = keyCount(t, ecli, "/reshard/")
	res = run("shard", "add", "s3", "--dsn", pgs[2].DSNApp())
	if res.code != 1 || !strings.Contains(res.stderr, "wal_level is replica") {
		t.Errorf("shard add of a replica-level shard: %d %s", res.code, res.stderr)
	}
	if keyCount(t, ecli, "/reshard/") != before {
		t.Error("a refused shard add wrote to etcd")
	}
	pgs[2].Exec(ctx, "ALTER SYSTEM SET wal_level = logical")
	if err := pgs[2].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if res = run("shard", "add", "s3", "--dsn", pgs[2].DSNApp()); res.code != 0 {
		t.Fatalf("shard add: %s", res.stderr)
	}
	if res = run("shard", "add", "s3", "--dsn", pgs[2].DSNApp()); res.code != 1 || !strings.Contains(res.stderr, "already exists") {
		t.Errorf("duplicate shard add: %d %s", res.code, res.stderr)
	}

	// export / import round trip.
	res = run("catalog", "export")
	if res.code != 0 {
		t.Fatalf("export: %s", res.stderr)
	}
	backup := writeFile(t, dir, "backup.json", res.stdout)
	if res = run("catalog", "import", backup); res.code != 1 || !strings.Contains(res.stderr, "--force") {
		t.Errorf("import over a catalog: %d %s", res.code, res.stderr)
	}
	if res = run("catalog", "import", writeFile(t, dir, "junk.json", `{"format":"nope"}`), "--force"); res.code != 1 || !strings.Contains(res.stderr, "format") {
		t.Errorf("import of junk: %d %s", res.code, res.stderr)
	}
	if _, err := ecli.Delete(ctx, "/reshard/demo/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if res = run("catalog", "show"); res.code != 1 || !strings.Contains(res.stderr, "reshard init") {
		t.Errorf("show of a missing catalog: %d %s", res.code, res.stderr)
	}
	if res = run("catalog", "import", backup); res.code != 0 {
		t.Fatalf("import: %s", res.stderr)
	}
	res = run("catalog", "show", "-o", "json")
	var back catalog.State
	if err := json.Unmarshal([]byte(res.stdout), &back); err != nil || len(back.Shards) != 3 || back.Shards["s2"].State != catalog.ShardDraining {
		t.Errorf("after import: %v %s", err, res.stdout)
	}
	res = run("stats", "show", "-o", "json")
	var stats2 catalog.Stats
	if err := json.Unmarshal([]byte(res.stdout), &stats2); err != nil || len(stats2.HotKeys) != len(stats.HotKeys) || stats2.HotKeys[0].Custom["read_qps"] != 50 {
		t.Errorf("stats after import: %v %s", err, res.stdout)
	}
}

// --etcd-user user[:password] and RESHARD_ETCD_PASSWORD against an etcd with auth on.
func TestEtcdAuthFlags(t *testing.T) {
	srv, ecli := testenv.Etcd(t)
	ctx := context.Background()
	if _, err := ecli.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := ecli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := ecli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	ep := []string{"--etcd", srv.Endpoint(), "--cluster", "demo"}
	res := runCLI(t, ctx, append(ep, "--etcd-user", "root:wrong", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, `refused user "root"`) || strings.Contains(res.stderr, "wrong") {
		t.Errorf("wrong password: %d %s", res.code, res.stderr)
	}
	res = runCLI(t, ctx, append(ep, "--etcd-user", "root:rootpw", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, "no catalog for cluster") {
		t.Errorf("right password: %d %s", res.code, res.stderr)
	}
	t.Setenv("RESHARD_ETCD_PASSWORD", "rootpw")
	res = runCLI(t, ctx, append(ep, "--etcd-user", "root", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, "no catalog for cluster") {
		t.Errorf("password from the environment: %d %s", res.code, res.stderr)
	}
}
