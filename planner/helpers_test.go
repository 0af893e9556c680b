package planner

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// rng is one catalog range with its stats, written compactly for tables.
type rng struct {
	r      string // "LO:HI"
	shard  string
	bytes  int64
	writes float64
}

// hot is one hot tenant.
type hot struct {
	key    int64
	bytes  int64
	writes float64
}

// fixture builds a catalog state and stats. shards maps a name to its state ("" = active).
func fixture(t testing.TB, shards map[string]string, ranges []rng, hots []hot) (*catalog.State, *catalog.Stats) {
	t.Helper()
	st := &catalog.State{
		Revision: 100,
		Config:   catalog.Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"t"}},
		Shards:   map[string]catalog.Shard{},
		ModRev:   map[string]int64{},
	}
	for name, state := range shards {
		if state == "" {
			state = catalog.ShardActive
		}
		st.Shards[name] = catalog.Shard{Name: name, DSN: "host=x", State: state}
	}
	stats := &catalog.Stats{Shards: map[string]catalog.ShardStats{}}
	for i, r := range ranges {
		kr, err := catalog.ParseRange(r.r)
		if err != nil {
			t.Fatal(err)
		}
		cr := catalog.Range{Range: kr, Shard: r.shard, State: catalog.RangeServing, Epoch: 1}
		st.Ranges = append(st.Ranges, cr)
		st.ModRev[catalog.RangeKey(kr.Lo)] = int64(10 + i)
		if r.bytes != 0 || r.writes != 0 {
			stats.Ranges = append(stats.Ranges, catalog.RangeStats{Range: kr, Shard: r.shard, Bytes: r.bytes, WritesPerSec: r.writes})
		}
	}
	for _, h := range hots {
		stats.HotKeys = append(stats.HotKeys, catalog.HotKey{Key: h.key, Bytes: h.bytes, WritesPerSec: h.writes})
	}
	if err := catalog.ValidateRanges(st.Ranges, st.Shards); err != nil {
		t.Fatalf("bad fixture: %v", err)
	}
	return st, stats
}

// execute runs the plan's steps against the catalog ranges the way apply would, and fails the
// test if a step does not fit the catalog as it is at that point. It returns the final ranges.
func execute(t testing.TB, st *catalog.State, p *Plan) []catalog.Range {
	t.Helper()
	cur := append([]catalog.Range(nil), st.Ranges...)
	find := func(r catalog.KeyRange) int {
		for i, c := range cur {
			if c.Range.Equal(r) {
				return i
			}
		}
		return -1
	}
	for _, s := range p.Steps {
		i := find(s.Range)
		if i < 0 {
			t.Fatalf("step %d (%s %s): no such range in the catalog at that point", s.N, s.Kind, s.Range)
		}
		if cur[i].Shard != s.From {
			t.Fatalf("step %d (%s %s): range is on %s, step says %s", s.N, s.Kind, s.Range, cur[i].Shard, s.From)
		}
		if cur[i].State == catalog.RangeFrozen {
			t.Fatalf("step %d touches frozen range %s", s.N, s.Range)
		}
		switch s.Kind {
		case StepMove:
			if _, ok := st.Shards[s.To]; !ok || st.Shards[s.To].State != catalog.ShardActive {
				t.Fatalf("step %d moves to %q, not an active shard", s.N, s.To)
			}
			cur[i].Shard = s.To
		case StepSplit:
			owner := cur[i].Shard
			cur = append(cur[:i], cur[i+1:]...)
			for _, part := range s.Parts {
				cur = append(cur, catalog.Range{Range: part, Shard: owner, State: catalog.RangeServing})
			}
		}
	}
	shards := map[string]catalog.Shard{}
	for k, v := range st.Shards {
		shards[k] = v
	}
	if err := catalog.ValidateRanges(cur, shards); err != nil {
		t.Fatalf("after the plan the ranges no longer tile the key line: %v", err)
	}
	sort.Slice(cur, func(i, j int) bool { return cur[i].Range.Lo < cur[j].Range.Lo })
	return cur
}

func shardLoad(p *Plan, name string) ShardLoad {
	for _, s := range p.Shards {
		if s.Shard == name {
			return s
		}
	}
	return ShardLoad{}
}

func describe(p *Plan) string {
	var b strings.Builder
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "  %d %s %s %v %s->%s load %.3f: %s\n", s.N, s.Kind, s.Range, s.At, s.From, s.To, s.Load, s.Reason)
	}
	for _, s := range p.Shards {
		fmt.Fprintf(&b, "  %s %s %.3f -> %.3f\n", s.Shard, s.State, s.Load, s.LoadAfter)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

func mustJSON(t *testing.T, p *Plan) []byte {
	b, err := p.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomFleet makes a catalog of n shards and about m ranges with skewed sizes and k hot
// tenants; with drain, the last shard is draining.
func randomFleet(r *rand.Rand, n, m, k int, drain bool) (*catalog.State, *catalog.Stats) {
	st := &catalog.State{Revision: 7, Config: catalog.Config{Cluster: "rnd"}, Shards: map[string]catalog.Shard{}, ModRev: map[string]int64{}}
	names := make([]string, n)
	for i := range names {
		names[i] = "s" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		state := catalog.ShardActive
		if drain && i == n-1 && n > 1 {
			state = catalog.ShardDraining
		}
		st.Shards[names[i]] = catalog.Shard{Name: names[i], DSN: "host=x", State: state}
	}
	stats := &catalog.Stats{}
	lo := int64(math.MinInt64)
	step := int64(1000)
	for i := 0; i < m; i++ {
		kr := catalog.KeyRange{Lo: lo, Hi: int64(i+1) * step}
		if i == m-1 {
			kr.HiInf = true
		}
		sh := names[r.Intn(n)]
		if r.Intn(3) == 0 {
			sh = names[0] // skew ownership towards the first shard
		}
		cr := catalog.Range{Range: kr, Shard: sh, State: catalog.RangeServing, Epoch: 1}
		if r.Intn(40) == 0 {
			cr.State, cr.Migration = catalog.RangeFrozen, "m"
		}
		st.Ranges = append(st.Ranges, cr)
		st.ModRev[catalog.RangeKey(kr.Lo)] = int64(i + 1)
		size := int64(math.Pow(r.Float64(), 3) * 10000)
		stats.Ranges = append(stats.Ranges, catalog.RangeStats{Range: kr, Bytes: size, WritesPerSec: math.Round(r.Float64() * float64(size) / 50)})
		lo = kr.Hi
	}
	for i := 0; i < k; i++ {
		key := int64(r.Intn(m * 1000))
		stats.HotKeys = append(stats.HotKeys, catalog.HotKey{Key: key, Bytes: int64(r.Intn(8000)), WritesPerSec: float64(r.Intn(200))})
	}
	return st, stats
}
