package main

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
)

// TestSplitAtKeyPlacesTheKeyAsPostgresDoes: --at-key reads a tenant key of the keyspace's
// type and splits where PostgreSQL puts it (its hash under hash: the values below are
// PostgreSQL 15's own uuid_hash_extended, hashtextextended and hashint8extended with seed
// 0; the key itself under range); a key of another type, or one whose position is not
// strictly inside the range, is one line naming it.
func TestSplitAtKeyPlacesTheKeyAsPostgresDoes(t *testing.T) {
	ks := func(typ catalog.KeyType, d catalog.Distribution) catalog.Keyspace {
		return catalog.Keyspace{Key: "tenant_id", Type: typ, Distribution: d}
	}
	uuidHash, textHash, bigHash, bigRange := ks(catalog.KeyUUID, catalog.DistHash), ks(catalog.KeyText, catalog.DistHash),
		ks(catalog.KeyBigint, catalog.DistHash), ks("", "")
	for _, c := range []struct {
		name      string
		ks        catalog.Keyspace
		r         catalog.KeyRange
		at, atKey string
		want      int64
		err       []string // parts of the one-line error
	}{
		{"uuid by hash", uuidHash, catalog.Full, "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 7543054272012930821, nil},
		{"uuid in PostgreSQL's other input forms", uuidHash, catalog.From(0), "", "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", 7543054272012930821, nil},
		{"text by hash", textHash, catalog.Below(0), "", "tenant-1", -5960342201233910903, nil},
		{"bigint by hash", bigHash, catalog.Full, "", "1", -3670598878359251130, nil},
		{"bigint by range: the key itself", bigRange, catalog.NewRange(0, 1000), "", "500", 500, nil},
		{"--at is a position", uuidHash, catalog.Full, "-42", "", -42, nil},
		{"not a uuid", uuidHash, catalog.Full, "", "acme", 0, []string{`--at-key "acme"`, "is not a uuid", "keyspace's keys are uuid"}},
		{"not an integer", bigRange, catalog.Full, "", "12x", 0, []string{`--at-key "12x"`, "is not a bigint"}},
		{"hash outside the range", uuidHash, catalog.Below(0), "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0,
			[]string{"hashes to 7543054272012930821", "not inside range :0", "reshard resolve"}},
		{"hash at the range's start", uuidHash, catalog.From(7543054272012930821), "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0,
			[]string{"hashes to 7543054272012930821", "the first position of range 7543054272012930821:"}},
		{"key outside the range", bigRange, catalog.NewRange(0, 1000), "", "1000", 0, []string{"--at-key 1000", "not inside range 0:1000"}},
		{"--at not a number", uuidHash, catalog.Full, "x", "", 0, []string{`--at "x"`, "64-bit integer"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := splitAt(c.ks, c.r, c.at, c.atKey)
			if c.err == nil {
				if err != nil || got != c.want {
					t.Fatalf("splitAt = %d, %v; want %d", got, err, c.want)
				}
				return
			}
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("splitAt = %d, %v; want one line with %q", got, err, c.err)
			}
			for _, w := range c.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestSplitAtKeyCutsTheCatalogAtTheKeysHash: `reshard split --at-key UUID` under hash
// distribution cuts the range at the key's hash, so the key starts the upper part (resolve
// says so); a key that does not parse, one whose hash is in another range, and --at with
// --at-key are each one line, exit 1, and nothing is written to etcd.
func TestSplitAtKeyCutsTheCatalogAtTheKeysHash(t *testing.T) {
	ctx := context.Background()
	cfg := catalog.Config{Cluster: "hsplit", Key: "tenant_id", Tables: []string{"tenants"}, KeyType: catalog.KeyUUID, Distribution: catalog.DistHash}
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSN: "host=two dbname=app"}}
	env := newCatalog(t, ctx, cfg, shards, []catalog.Range{{Range: catalog.Below(0), Shard: "s1"}, {Range: catalog.From(0), Shard: "s2"}})
	run := env.runner(t, ctx)
	const key, hash = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "7543054272012930821" // PostgreSQL's uuid_hash_extended(key, 0)
	revision := func() int64 {
		resp, err := env.cli.Get(ctx, "/reshard/hsplit/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"not a uuid", []string{"split", "--range", "0:", "--at-key", "acme"}, "is not a uuid"},
		{"hash in the other range", []string{"split", "--range", ":0", "--at-key", key}, "not inside range :0"},
		{"both --at and --at-key", []string{"split", "--range", "0:", "--at", "5", "--at-key", key}, "none of the others can be"},
		{"neither", []string{"split", "--range", "0:"}, "at least one of the flags"},
	} {
		t.Run("refused: "+c.name, func(t *testing.T) {
			before := revision()
			res := run(c.args...)
			if res.code != 1 || res.stdout != "" || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, c.want) {
				t.Errorf("split %q: %d stdout %q stderr %q, want one line with %q", c.args, res.code, res.stdout, res.stderr, c.want)
			}
			if after := revision(); after != before {
				t.Errorf("split %q wrote to etcd: revision %d -> %d", c.args, before, after)
			}
		})
	}
	res := run("split", "--range", "0:", "--at-key", key)
	if res.code != 0 || !strings.Contains(res.stdout, "split 0: into 0:"+hash+" and "+hash+": on s2") {
		t.Fatalf("split --at-key: %d %q %q", res.code, res.stdout, res.stderr)
	}
	st, err := env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ranges) != 3 || st.Ranges[2].Range.String() != hash+":" || st.Ranges[1].Range.String() != "0:"+hash {
		t.Errorf("ranges after the split: %v", st.Ranges)
	}
	if res := run("resolve", key); res.code != 0 || !strings.Contains(res.stdout, hash+":") {
		t.Errorf("resolve %s after the split: %q %q", key, res.stdout, res.stderr)
	}
}
