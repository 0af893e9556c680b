package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestShardDrainAndList: `shard drain` marks a shard draining (--undo makes it active
// again) and names an unknown one; `shard list` shows each shard's state, ranges and, once
// measured, size.
func TestShardDrainAndList(t *testing.T) {
	run := catalogOnly(t).runner(t, context.Background())
	list := func(t *testing.T) []shardRow {
		t.Helper()
		res := run("shard", "list", "-o", "json")
		var rows []shardRow
		if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil || len(rows) != 2 {
			t.Fatalf("shard list: %v %s", err, res.stdout)
		}
		return rows
	}
	t.Run("drain marks the shard draining", func(t *testing.T) {
		if res := run("shard", "drain", "s2"); res.code != 0 || !strings.Contains(res.stdout, "shard s2 is draining") {
			t.Fatalf("drain: %d %s", res.code, res.stderr)
		}
		if rows := list(t); rows[1].State != catalog.ShardDraining || rows[0].State != catalog.ShardActive {
			t.Errorf("after drain: %+v", rows)
		}
	})
	t.Run("drain of an unknown shard names it", func(t *testing.T) {
		if res := run("shard", "drain", "s9"); res.code != 1 || !strings.Contains(res.stderr, `"s9"`) {
			t.Errorf("drain of unknown shard: %d %s", res.code, res.stderr)
		}
	})
	t.Run("list has ranges and the measured size", func(t *testing.T) {
		rows := list(t)
		if rows[0].Ranges != 1 || rows[0].Bytes == nil || *rows[0].Bytes != 4<<20 || rows[1].Connection != "$RESHARD_TEST_S2_DSN" {
			t.Errorf("shard list: %+v", rows)
		}
		if res := run("shard", "list"); !strings.Contains(res.stdout, "4.0 MiB") {
			t.Errorf("shard list as text:\n%s", res.stdout)
		}
	})
	t.Run("drain --undo makes it active again", func(t *testing.T) {
		if res := run("shard", "drain", "s2", "--undo"); res.code != 0 || !strings.Contains(res.stdout, "active again") {
			t.Fatalf("drain --undo: %d %s", res.code, res.stderr)
		}
		if rows := list(t); rows[1].State != catalog.ShardActive {
			t.Errorf("after drain --undo: %+v", rows)
		}
	})
}

// TestShardAdd: `shard add` checks the new shard as init does: one that fails the checks
// is not added and nothing is written; a good one is added; a second shard of the same
// name is refused.
func TestShardAdd(t *testing.T) {
	env := catalogOnly(t)
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	replicaLevelShard(t, ctx, pg)
	run := env.runner(t, ctx)
	t.Run("a shard that fails the checks is not added", func(t *testing.T) {
		before := keyCount(t, env.cli, "/reshard/")
		if res := run("shard", "add", "s3", "--dsn", pg.DSNApp()); res.code != 1 || !strings.Contains(res.stderr, "wal_level is replica") {
			t.Errorf("shard add of a replica-level shard: %d %s", res.code, res.stderr)
		}
		if keyCount(t, env.cli, "/reshard/") != before {
			t.Error("a refused shard add wrote to etcd")
		}
	})
	t.Run("a good shard is added", func(t *testing.T) {
		pg.Exec(ctx, "ALTER SYSTEM SET wal_level = logical")
		if err := pg.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if res := run("shard", "add", "s3", "--dsn", pg.DSNApp()); res.code != 0 || !strings.Contains(res.stdout, "shard s3 added") {
			t.Fatalf("shard add: %d %s", res.code, res.stderr)
		}
	})
	t.Run("a second shard of the same name is refused", func(t *testing.T) {
		if res := run("shard", "add", "s3", "--dsn", pg.DSNApp()); res.code != 1 || !strings.Contains(res.stderr, "already exists") {
			t.Errorf("duplicate shard add: %d %s", res.code, res.stderr)
		}
	})
}
