package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestVerifyComparesARangeOnTwoShards: `verify` compares a range's rows per table on the
// range's owner and another shard: equal rows exit 0; a difference exits 1, as one line on
// stderr with the text table, or as JSON saying ok false (and nothing on stderr).
func TestVerifyComparesARangeOnTwoShards(t *testing.T) {
	pgs := testenv.Postgres(t, 2)
	ctx := context.Background()
	for _, pg := range pgs {
		pg.Exec(ctx, `CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
INSERT INTO orders SELECT 1 + g % 5, g, 'o' FROM generate_series(1, 500) g;`)
	}
	pgs[1].Exec(ctx, `UPDATE orders SET note = 'changed' WHERE tenant_id = 4 AND id = 3`)
	shards := []catalog.Shard{{Name: "s1", DSN: pgs[0].DSNApp()}, {Name: "s2", DSN: pgs[1].DSNApp()}}
	ranges := []catalog.Range{{Range: catalog.Below(1000), Shard: "s1"}, {Range: catalog.From(1000), Shard: "s2"}}
	env := newCatalog(t, ctx, catalog.Config{Cluster: "verify", Key: "tenant_id", Tables: []string{"orders"}}, shards, ranges)
	run := cliRunner(t, ctx, append(env.global, "verify", "--with", "s2")...)
	t.Run("equal rows", func(t *testing.T) {
		res := run("--range", "1:4")
		if res.code != 0 || !strings.Contains(res.stdout, "ROWS ON s1") || !strings.Contains(strings.Join(strings.Fields(res.stdout), " "), "orders 300 300 1 0 true") {
			t.Errorf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
		}
	})
	t.Run("a difference as text", func(t *testing.T) {
		res := run("--range", "1:5")
		if res.code != 1 || !strings.Contains(res.stdout, "false") || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, "orders") ||
			!strings.Contains(res.stdout, "orders (tenant_id, id)=(4, 3): differs") {
			t.Errorf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
		}
	})
	t.Run("a difference as JSON", func(t *testing.T) {
		res := run("--range", "1:5", "-o", "json")
		var out struct {
			Range  string   `json:"range"`
			Shards []string `json:"shards"`
			OK     bool     `json:"ok"`
			Error  string   `json:"error"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || res.code != 1 || out.OK || out.Error == "" || out.Range != "1:5" || res.stderr != "" {
			t.Errorf("exit %d, %v: %+v\n%s%s", res.code, err, out, res.stdout, res.stderr)
		}
	})
	t.Run("an unknown shard", func(t *testing.T) {
		res := runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "verify", "verify", "--range", "1:5", "--with", "s9")
		if res.code != 1 || !strings.Contains(res.stderr, `unknown shard "s9"`) {
			t.Errorf("exit %d: %s", res.code, res.stderr)
		}
	})
	t.Run("every differing key to --diff-out, shards by --source and --target", func(t *testing.T) {
		out := t.TempDir() + "/diff.txt"
		res := runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "verify", "verify", "--range", "1:5", "--source", "s1", "--target", "s2", "--diff-out", out)
		b, err := os.ReadFile(out)
		if res.code != 1 || err != nil || string(b) != "orders (tenant_id, id)=(4, 3): differs\n" {
			t.Errorf("exit %d, %v, file %q:\n%s%s", res.code, err, b, res.stdout, res.stderr)
		}
	})
	t.Run("a migration by its ID", func(t *testing.T) {
		m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: catalog.NewRange(1, 4), Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp}
		if err := env.store.PutMigration(ctx, m); err != nil {
			t.Fatal(err)
		}
		// No driver holds its lock: each shard from its own snapshot, and one line says so.
		res := runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "verify", "verify", "m1")
		if res.code != 0 || !strings.Contains(strings.Join(strings.Fields(res.stdout), " "), "orders 300 300 1 0 true") ||
			strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, "not at one source position (no driver runs migration m1") {
			t.Errorf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
		}
		res = runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "verify", "verify", "m1", "--range", "1:2")
		if res.code != 1 || !strings.Contains(res.stderr, "not both") {
			t.Errorf("ID and --range: exit %d: %s", res.code, res.stderr)
		}
	})
}
