package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestStatsPutLoad(t *testing.T) {
	s, _ := testStore(t, WithMaxTxnOps(8))
	ctx := context.Background()
	st := initDemo(t, s)
	if err := s.PutHotKeyCustom(ctx, 42, map[string]float64{"read_qps": 100}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHotKeyCustom(ctx, 42, map[string]float64{"bad name": 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad metric = %v", err)
	}
	var hot []HotKey
	for i := range 20 {
		hot = append(hot, HotKey{Key: int64(i), Shard: "s2", Bytes: int64(100 - i)})
	}
	in := &Stats{Shards: map[string]ShardStats{"s1": {Shard: "s1", Bytes: 5}, "s2": {Shard: "s2", Bytes: 7}}, HotKeys: hot}
	for _, r := range st.Ranges {
		in.Ranges = append(in.Ranges, RangeStats{Range: r.Range, Shard: r.Shard, Rows: 3})
	}
	if err := s.PutStats(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Shards) != 2 || len(got.Ranges) != 3 || len(got.HotKeys) != 21 {
		t.Fatalf("LoadStats: %d shards %d ranges %d hot keys", len(got.Shards), len(got.Ranges), len(got.HotKeys))
	}
	// A new collection replaces measured hot keys but keeps the application's own.
	in.HotKeys = []HotKey{{Key: 42, Shard: "s2", Bytes: 1}}
	if err := s.PutStats(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadStats(ctx)
	if len(got.HotKeys) != 1 || got.HotKeys[0].Custom["read_qps"] != 100 || got.HotKeys[0].Bytes != 1 {
		t.Fatalf("hot keys after second put: %+v", got.HotKeys)
	}
}

func TestComputeStats(t *testing.T) {
	st := &State{Ranges: []Range{{Range: Below(100), Shard: "a"}, {Range: From(100), Shard: "b"}}}
	ms := []ShardMeasurement{
		{Shard: "a", SampleSeconds: 10, Tables: map[string]TableStats{"t": {Bytes: 1000, Rows: 10}},
			Tenants: map[int64]TenantLoad{1: {Bytes: 600, Rows: 6, Writes: 5}, 2: {Bytes: 300, Rows: 3, Writes: 500}, 150: {Bytes: 100, Rows: 1}}},
		{Shard: "b", SampleSeconds: 10, Tables: map[string]TableStats{"t": {Bytes: 50, Rows: 1}},
			Tenants: map[int64]TenantLoad{200: {Bytes: 50, Rows: 1, Writes: 10}}},
	}
	got := ComputeStats(st, ms, 1, []int64{200})
	if got.Shards["a"].Bytes != 1000 || got.Shards["b"].Rows != 1 {
		t.Errorf("shards %+v", got.Shards)
	}
	r0, r1 := got.Ranges[0], got.Ranges[1]
	if r0.Bytes != 900 || r0.Rows != 9 || r0.Keys != 2 || r0.WritesPerSec != 50.5 {
		t.Errorf("range a %+v (the leftover key 150 on a must not count)", r0)
	}
	if r1.Bytes != 50 || r1.WritesPerSec != 1 {
		t.Errorf("range b %+v", r1)
	}
	var keys []int64
	for _, h := range got.HotKeys {
		keys = append(keys, h.Key)
	}
	if fmt.Sprint(keys) != "[1 2 200]" {
		t.Errorf("hot keys %v, want top by bytes (1), top by writes (2) and the included 200", keys)
	}
}

// TestComputeStatsNamesHashedHotTenants: a tenant's key as text, measured under hash
// distribution, goes with it into its hot key record; a tenant measured without one (range
// distribution) has none.
func TestComputeStatsNamesHashedHotTenants(t *testing.T) {
	const u = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d"
	st := &State{Ranges: []Range{{Range: Full, Shard: "a"}}}
	ms := []ShardMeasurement{{Shard: "a", Tables: map[string]TableStats{"t": {Bytes: 1000, Rows: 10}},
		Tenants: map[int64]TenantLoad{-4660462969137640930: {Tenant: u, Bytes: 900, Rows: 9}, 5: {Bytes: 100, Rows: 1}}}}
	got := ComputeStats(st, ms, 2, nil)
	if len(got.HotKeys) != 2 || got.HotKeys[0].Tenant != u || got.HotKeys[1].Tenant != "" {
		t.Fatalf("hot keys %+v, want the first named %s and the second unnamed", got.HotKeys, u)
	}
	if n := got.HotKeys[0].Name(); n != u+" (hash -4660462969137640930)" {
		t.Errorf("Name() = %q", n)
	}
	if n := got.HotKeys[1].Name(); n != "5" {
		t.Errorf("Name() of an unnamed key = %q, want the position alone", n)
	}
}

// TestPutTenantCustomHashesTheKey: `stats put` gives a tenant key, which the store places
// as the catalog does (its hash under hash distribution, recorded with the key in its
// canonical text; the key itself under range); a key not of the keyspace's type is refused
// with nothing written.
func TestPutTenantCustomHashesTheKey(t *testing.T) {
	ctx := context.Background()
	const u = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d"
	uuidKey, err := ParseKey(KeyUUID, u)
	if err != nil {
		t.Fatal(err)
	}
	hashCfg := demoConfig()
	hashCfg.KeyType, hashCfg.Distribution = KeyUUID, DistHash
	for _, tc := range []struct {
		name        string
		cfg         Config
		in, bad     string
		pos         int64
		tenant, msg string
	}{
		{"hash uuid", hashCfg, strings.ToUpper(u), "42", HashKey(uuidKey), u, `"42" is not a uuid`},
		{"range bigint", demoConfig(), "42", "x7", 42, "", `"x7" is not a bigint`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testStore(t)
			ranges := []Range{{Range: Below(0), Shard: "s1"}, {Range: From(0), Shard: "s2"}}
			if err := s.Init(ctx, tc.cfg, demoShards("s1", "s2"), ranges, false); err != nil {
				t.Fatal(err)
			}
			hk, err := s.PutTenantCustom(ctx, tc.in, map[string]float64{"read_qps": 7})
			if err != nil || hk.Key != tc.pos || hk.Tenant != tc.tenant {
				t.Fatalf("PutTenantCustom(%s) = %+v, %v; want position %d, tenant %q", tc.in, hk, err, tc.pos, tc.tenant)
			}
			if _, err := s.PutTenantCustom(ctx, tc.bad, map[string]float64{"read_qps": 1}); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("bad key %q: %v, want %q", tc.bad, err, tc.msg)
			}
			got, err := s.LoadStats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := HotKey{Key: tc.pos, Tenant: tc.tenant, Shard: "s1", Custom: map[string]float64{"read_qps": 7}}
			if tc.pos >= 0 {
				want.Shard = "s2"
			}
			if len(got.HotKeys) != 1 || fmt.Sprintf("%+v", got.HotKeys[0]) != fmt.Sprintf("%+v", want) {
				t.Errorf("stored hot keys %+v, want only %+v", got.HotKeys, want)
			}
		})
	}
}
