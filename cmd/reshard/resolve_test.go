package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestResolvePrintsWhereEachKeyLives: under hash distribution resolve prints each uuid
// key's hash (PostgreSQL's uuid_hash_extended, as the Go port computes it), its range,
// shard, state and epoch, as text or as a JSON list; under range the key itself picks the
// range and the hash is null; a key of the wrong type is one line, exit 1, nothing printed.
func TestResolvePrintsWhereEachKeyLives(t *testing.T) {
	ctx := context.Background()
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSN: "host=two dbname=app"}}
	ranges := []catalog.Range{{Range: catalog.Below(0), Shard: "s1"}, {Range: catalog.From(0), Shard: "s2"}}
	env := newCatalog(t, ctx, catalog.Config{Cluster: "hashed", Key: "company_id", Tables: []string{"companies", "campaigns"},
		TableKeys: map[string]string{"companies": "id"}, KeyType: catalog.KeyUUID, Distribution: catalog.DistHash}, shards, ranges)
	hashed := env.global
	ranged := addCatalog(t, ctx, env.etcd, env.cli, catalog.Config{Cluster: "ranged", Key: "tenant_id", Tables: []string{"orders"}}, shards, ranges).global

	keys := []string{"0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d", "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", "00000000-0000-0000-0000-000000000000"}
	want := make([]resolved, len(keys))
	for i, k := range keys {
		key, err := catalog.ParseKey(catalog.KeyUUID, k)
		if err != nil {
			t.Fatal(err)
		}
		h := catalog.HashKey(key)
		shard := "s2"
		r := catalog.From(0)
		if h < 0 {
			shard, r = "s1", catalog.Below(0)
		}
		want[i] = resolved{Key: key.String(), Hash: &h, Range: r, Shard: shard, State: catalog.RangeServing, Epoch: 1}
	}

	t.Run("json under hash", func(t *testing.T) {
		res := runCLI(t, ctx, append(hashed, append([]string{"resolve", "-o", "json"}, keys...)...)...)
		if res.code != 0 {
			t.Fatalf("resolve: %d %s", res.code, res.stderr)
		}
		var got []resolved
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || len(got) != len(want) {
			t.Fatalf("resolve -o json: %v\n%s", err, res.stdout)
		}
		for i := range want {
			if got[i].Key != want[i].Key || *got[i].Hash != *want[i].Hash || !got[i].Range.Equal(want[i].Range) ||
				got[i].Shard != want[i].Shard || got[i].State != want[i].State || got[i].Epoch != want[i].Epoch {
				t.Errorf("key %s: got %+v, want %+v", keys[i], got[i], want[i])
			}
		}
	})
	t.Run("text under hash", func(t *testing.T) {
		res := runCLI(t, ctx, append(hashed, append([]string{"resolve"}, keys...)...)...)
		lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
		if res.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "KEY") || !strings.Contains(lines[0], "HASH") {
			t.Fatalf("resolve: %d %s %s", res.code, res.stdout, res.stderr)
		}
		for i, w := range want {
			f := strings.Fields(lines[i+1])
			if f[0] != w.Key || f[1] != strconv.FormatInt(*w.Hash, 10) || f[2] != w.Range.String() || f[3] != w.Shard || f[4] != "serving" || f[5] != "1" {
				t.Errorf("line %q, want %+v", lines[i+1], w)
			}
		}
	})
	t.Run("range distribution: the key picks the range, no hash", func(t *testing.T) {
		res := runCLI(t, ctx, append(ranged, "resolve", "-o", "json", "--", "-5", "5")...)
		var got []map[string]any
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || len(got) != 2 {
			t.Fatalf("resolve: %v %s %s", err, res.stdout, res.stderr)
		}
		if got[0]["shard"] != "s1" || got[1]["shard"] != "s2" || got[0]["hash"] != nil || got[1]["key"] != "5" {
			t.Errorf("resolve under range: %v", got)
		}
	})
	t.Run("a key of another type is refused", func(t *testing.T) {
		for _, args := range [][]string{append(hashed, "resolve", keys[0], "acme"), append(ranged, "resolve", "5", keys[0])} {
			res := runCLI(t, ctx, args...)
			if res.code != 1 || res.stdout != "" || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, "keyspace's keys are") {
				t.Errorf("resolve %q: %d stdout %q stderr %q", args[len(args)-2:], res.code, res.stdout, res.stderr)
			}
		}
	})
}
