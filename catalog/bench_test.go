package catalog

import (
	"context"
	"fmt"
	"math"
	"testing"
)

// manyRanges returns n ranges tiling the key line over shards s1..s3.
func manyRanges(n int) []Range {
	rs := make([]Range, n)
	step := int64(math.MaxInt64/int64(n)) * 2
	lo := int64(math.MinInt64)
	for i := range rs {
		r := KeyRange{Lo: lo, Hi: lo + step}
		if i == n-1 {
			r = From(lo)
		}
		rs[i] = Range{Range: r, Shard: fmt.Sprintf("s%d", i%3+1), State: RangeServing, Epoch: 1}
		lo += step
	}
	return rs
}

// Resolve is what a router pays per routed statement.
func BenchmarkResolve(b *testing.B) {
	st := &State{Ranges: manyRanges(10000), Revision: 1}
	r := NewResolver(NewStaticCache(st))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		k := uint64(0)
		for pb.Next() {
			k += 0x9E3779B97F4A7C15 // spread keys over the line
			if _, err := r.Resolve(int64(k)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Load of a catalog with 1000 ranges from a real etcd.
func BenchmarkLoad1000Ranges(b *testing.B) {
	s, _ := testStoreB(b) // 1000 ranges exceed one transaction: Init batches them
	ctx := context.Background()
	if err := s.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), manyRanges(1000), false); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		st, err := s.Load(ctx)
		if err != nil || len(st.Ranges) != 1000 {
			b.Fatal(err)
		}
	}
}

// Freeze + Flip: the catalog's share of a cutover's write-unavailability window.
func BenchmarkFreezeFlip(b *testing.B) {
	s, _ := testStoreB(b)
	ctx := context.Background()
	if err := s.Init(ctx, demoConfig(), demoShards("s1", "s2"), []Range{{Range: Below(0), Shard: "s1"}, {Range: From(0), Shard: "s2"}}, false); err != nil {
		b.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		r := st.Ranges[1]
		to := map[string]string{"s1": "s2", "s2": "s1"}[r.Shard]
		m := &Migration{ID: fmt.Sprintf("m%d", i), Kind: KindMove, Range: r.Range, Source: r.Shard, Target: to, Phase: PhaseCatchingUp}
		if err := s.PutMigration(ctx, m); err != nil {
			b.Fatal(err)
		}
		if err := s.Freeze(ctx, st, 0, m); err != nil {
			b.Fatal(err)
		}
		if err := s.Flip(ctx, st, 0, m, to); err != nil {
			b.Fatal(err)
		}
	}
}
