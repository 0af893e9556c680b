package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// cliSchema is a small multi-tenant schema (with a date-partitioned table) plus tables
// that break the rules, for the bad-input cases.
const cliSchema = moveSchema + `
CREATE TABLE events_p2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE nokey (id bigint PRIMARY KEY);
CREATE TABLE badri (id bigint PRIMARY KEY, tenant_id bigint NOT NULL);
`

// replicaLevelShard starts a shard with cliSchema whose wal_level is replica: every check
// of a shard must refuse it.
func replicaLevelShard(t *testing.T, ctx context.Context, pg *testenv.PG) {
	t.Helper()
	pg.Exec(ctx, cliSchema)
	pg.Exec(ctx, "ALTER SYSTEM SET wal_level = replica")
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

// initFixture is a good shard (also named by RESHARD_TEST_S2_DSN), a shard with wal_level
// replica, an etcd, and cluster files: good is valid, bad(tables, shards, ranges) one of
// cluster "bad".
type initFixture struct {
	good, replica *testenv.PG
	ecli          *clientv3.Client
	etcd          []string
	dir, goodYAML string
}

func newInitFixture(t *testing.T) *initFixture {
	pgs := testenv.Postgres(t, 2)
	srv, ecli := testenv.Etcd(t)
	ctx := context.Background()
	pgs[0].Exec(ctx, cliSchema)
	replicaLevelShard(t, ctx, pgs[1])
	t.Setenv("RESHARD_TEST_S2_DSN", pgs[0].DSNApp())
	f := &initFixture{good: pgs[0], replica: pgs[1], ecli: ecli, etcd: []string{"--etcd", srv.Endpoint()}, dir: t.TempDir()}
	f.goodYAML = fmt.Sprintf(`cluster: demo
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
	return f
}

func (f *initFixture) init(t *testing.T, file string, args ...string) cliResult {
	return runCLI(t, context.Background(), append(append(f.etcd, "init", "-f", file), args...)...)
}

func (f *initFixture) s1() string { return fmt.Sprintf("  - name: s1\n    dsn: %q\n", f.good.DSNApp()) }
func (f *initFixture) s3() string {
	return fmt.Sprintf("  - name: s3\n    dsn: %q\n", f.replica.DSNApp())
}

func bad(tables, shards, ranges string) string {
	return "cluster: bad\nkey: tenant_id\ntables: [" + tables + "]\nshards:\n" + shards + ranges
}

// TestInitRefusesBadClusterFiles: each bad cluster file or shard is one clear line on
// stderr, exit 1, no password, and nothing written to etcd; several problems are listed
// at once.
func TestInitRefusesBadClusterFiles(t *testing.T) {
	f := newInitFixture(t)
	t.Setenv("RESHARD_TEST_UNREACHABLE_DSN", fmt.Sprintf("host=127.0.0.1 port=%d user=app password=hunter2 dbname=app connect_timeout=2", closedPort(t)))
	cases := []struct {
		name, yaml string
		etcd       []string // instead of the fixture's
		want       []string
	}{
		{"overlapping ranges", bad("tenants", f.s1(), "ranges:\n  - {range: \":100\", shard: s1}\n  - {range: \"50:\", shard: s1}\n"), nil,
			[]string{"ranges :100 and 50: overlap"}},
		{"gap", bad("tenants", f.s1(), "ranges:\n  - {range: \":100\", shard: s1}\n  - {range: \"200:\", shard: s1}\n"), nil,
			[]string{"gap between :100 and 200:"}},
		{"unknown shard", bad("tenants", f.s1(), "ranges:\n  - {range: \":\", shard: s9}\n"), nil,
			[]string{`unknown shard "s9"`}},
		{"unreachable shard, password masked", bad("tenants", "  - name: s1\n    dsn_env: RESHARD_TEST_UNREACHABLE_DSN\n", ""), nil,
			[]string{"shard s1: cannot connect to", "password=****"}},
		{"password in dsn", bad("tenants", "  - name: s1\n    dsn: \"host=h password=hunter2\"\n", ""), nil,
			[]string{"carries a password", "dsn_env"}},
		{"empty dsn_env", bad("tenants", "  - name: s1\n    dsn_env: RESHARD_TEST_UNSET_DSN\n", ""), nil,
			[]string{"RESHARD_TEST_UNSET_DSN is empty or unset"}},
		{"wal_level", bad("tenants", f.s3(), ""), nil,
			[]string{"shard s3: wal_level is replica, not logical", "ALTER SYSTEM SET wal_level = logical"}},
		{"missing table", bad("tenants, nosuch", f.s1(), ""), nil,
			[]string{"table nosuch does not exist"}},
		{"missing key column", bad("nokey", f.s1(), ""), nil,
			[]string{"table nokey has no column tenant_id"}},
		{"replica identity without key", bad("badri", f.s1(), ""), nil,
			[]string{"does not include tenant_id", "REPLICA IDENTITY USING INDEX"}},
		{"malformed YAML", "cluster: bad\ntables: [a, b\nshards:\n", nil,
			[]string{"is not a valid cluster file", "line"}},
		{"unknown field", "cluster: bad\nshrads: []\n", nil,
			[]string{"field shrads not found"}},
		{"etcd unreachable", f.goodYAML, []string{"--etcd", fmt.Sprintf("127.0.0.1:%d", closedPort(t))},
			[]string{"etcd unreachable at 127.0.0.1:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, f.dir, "bad.yaml", tc.yaml)
			etcd := f.etcd
			if tc.etcd != nil {
				etcd = tc.etcd
			}
			res := runCLI(t, context.Background(), append(etcd, "init", "-f", file)...)
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
			if n := keyCount(t, f.ecli, "/reshard/"); n != 0 {
				t.Fatalf("a refused init wrote %d keys", n)
			}
		})
	}
	t.Run("several problems are all listed", func(t *testing.T) {
		res := f.init(t, writeFile(t, f.dir, "multi.yaml", bad("tenants, nokey, badri", f.s1()+f.s3(), "")))
		if res.code != 1 || !strings.Contains(res.stderr, "problems, nothing was written") ||
			!strings.Contains(res.stderr, "shards s1, s3: table nokey") || !strings.Contains(res.stderr, "shard s3: wal_level") {
			t.Fatalf("multi-problem init: %d %s", res.code, res.stderr)
		}
		if n := keyCount(t, f.ecli, "/reshard/"); n != 0 {
			t.Fatalf("a refused init wrote %d keys", n)
		}
	})
}

// TestInitWritesTheCatalog: a good cluster file becomes the catalog at the documented keys
// (a dsn_env shard's DSN is not stored); a second init is refused without --force, and
// --force is refused while a migration is in progress; a refusal changes nothing.
func TestInitWritesTheCatalog(t *testing.T) {
	f := newInitFixture(t)
	ctx := context.Background()
	good := writeFile(t, f.dir, "cluster.yaml", f.goodYAML)
	t.Run("writes the documented keys", func(t *testing.T) {
		res := f.init(t, good)
		if res.code != 0 {
			t.Fatalf("init: %d %s", res.code, res.stderr)
		}
		if !strings.Contains(res.stdout, "2 shards, 2 ranges") || !strings.Contains(res.stdout, "$RESHARD_TEST_S2_DSN") {
			t.Errorf("init output:\n%s", res.stdout)
		}
		for _, k := range []string{"config", "shards/s1", "shards/s2", "ranges/" + catalog.KeyHex(-1<<63), "ranges/" + catalog.KeyHex(1000), "history/00000000000000000001", "seq"} {
			resp, err := f.ecli.Get(ctx, "/reshard/demo/"+k)
			if err != nil || len(resp.Kvs) != 1 || !json.Valid(resp.Kvs[0].Value) {
				t.Errorf("key /reshard/demo/%s: %v %v", k, resp, err)
			}
		}
		resp, _ := f.ecli.Get(ctx, "/reshard/demo/shards/s2")
		if len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Value), "port=") {
			t.Errorf("the DSN of a dsn_env shard was stored: %s", resp.Kvs)
		}
	})
	t.Run("a second init needs --force", func(t *testing.T) {
		before := keyCount(t, f.ecli, "/reshard/")
		if res := f.init(t, good); res.code != 1 || !strings.Contains(res.stderr, "--force") {
			t.Errorf("second init: %d %s", res.code, res.stderr)
		}
		if keyCount(t, f.ecli, "/reshard/") != before {
			t.Error("a refused init changed the catalog")
		}
	})
	// Its journal is what knows how to remove a migration's slot, publication, fence and
	// copied rows.
	t.Run("--force is refused while a migration is in progress", func(t *testing.T) {
		live, _ := json.Marshal(catalog.Migration{ID: "m_live", Kind: "move", Range: catalog.NewRange(0, 10), Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp})
		if _, err := f.ecli.Put(ctx, "/reshard/demo/"+catalog.MigrationKey("m_live"), string(live)); err != nil {
			t.Fatal(err)
		}
		before := keyCount(t, f.ecli, "/reshard/")
		if res := f.init(t, good, "--force"); res.code != 1 || !strings.Contains(res.stderr, "m_live (catching_up)") || !strings.Contains(res.stderr, "reshard cancel") {
			t.Errorf("init --force with a live migration: %d %s", res.code, res.stderr)
		}
		if keyCount(t, f.ecli, "/reshard/") != before {
			t.Error("a refused init --force changed the catalog")
		}
	})
}
