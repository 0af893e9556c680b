package planner

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// syntheticFleet is the benchmark's catalog: shards shards, of which the last `fresh` are new
// and empty and the `draining` before them are being drained; ranges ranges of 1,000 keys
// with Zipf-like sizes (the range of rank r weighs r^-0.8, so the largest holds about 20
// shards' worth), writes/s loosely following size, and 1 to 3 hot tenants in each of the
// 2,000 largest ranges carrying 10-50% of it, none more than 0.8 of a shard.
func syntheticFleet(seed int64, shards, ranges, fresh, draining int) (*catalog.State, *catalog.Stats) {
	r := rand.New(rand.NewSource(seed))
	st := &catalog.State{Revision: 1, Config: catalog.Config{Cluster: "bench"}, Shards: map[string]catalog.Shard{}, ModRev: map[string]int64{}}
	names := make([]string, shards)
	for i := range names {
		names[i] = fmt.Sprintf("s%04d", i)
		state := catalog.ShardActive
		if i >= shards-fresh-draining && i < shards-fresh {
			state = catalog.ShardDraining
		}
		st.Shards[names[i]] = catalog.Shard{Name: names[i], DSN: "host=x", State: state}
	}
	weight := make([]float64, ranges)
	for i := range weight {
		weight[i] = math.Pow(float64(i+1), -0.8)
	}
	r.Shuffle(len(weight), func(a, b int) { weight[a], weight[b] = weight[b], weight[a] })
	var total float64
	for _, x := range weight {
		total += x
	}
	const totalBytes = 1 << 50 // 1 PiB over the fleet
	const totalWrites = 2e6
	stats := &catalog.Stats{}
	owners := shards - fresh
	for i := 0; i < ranges; i++ {
		kr := catalog.KeyRange{Lo: int64(i) * 1000, Hi: int64(i+1) * 1000}
		if i == 0 {
			kr.Lo = math.MinInt64
		}
		if i == ranges-1 {
			kr.HiInf = true
		}
		st.Ranges = append(st.Ranges, catalog.Range{Range: kr, Shard: names[r.Intn(owners)], State: catalog.RangeServing, Epoch: 1})
		st.ModRev[catalog.RangeKey(kr.Lo)] = int64(i + 2)
		share := weight[i] / total
		stats.Ranges = append(stats.Ranges, catalog.RangeStats{
			Range: kr, Bytes: int64(share * totalBytes),
			WritesPerSec: math.Round(math.Pow(share, 0.9)*totalWrites*(0.5+r.Float64())*100) / 100,
			Keys:         1000,
		})
	}
	order := make([]int, ranges)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return weight[order[a]] > weight[order[b]] })
	capBytes := 0.8 * totalBytes / float64(shards-draining)
	capWrites := 0.4 * totalWrites / float64(shards-draining)
	for _, i := range order[:2000] {
		rs := stats.Ranges[i]
		lo := int64(i) * 1000
		for n := 1 + r.Intn(3); n > 0; n-- {
			f := 0.1 + 0.4*r.Float64()/float64(n)
			stats.HotKeys = append(stats.HotKeys, catalog.HotKey{
				Key:          lo + int64(r.Intn(1000)),
				Bytes:        int64(math.Min(f*float64(rs.Bytes), capBytes)),
				WritesPerSec: math.Min(f*rs.WritesPerSec, capWrites),
			})
		}
	}
	return st, stats
}

// BenchmarkPlan1000x100k plans a fleet of 1,000 shards (10 new and empty, 5 draining) and
// 100,000 ranges with hot tenants, at a 5% threshold. Target: under 1 s per plan and
// max/mean at most 1.05 where the lower bound allows it.
func BenchmarkPlan1000x100k(b *testing.B) {
	st, stats := syntheticFleet(1, 1000, 100000, 10, 5)
	for _, th := range []float64{0.05, 0.1} {
		b.Run(fmt.Sprintf("threshold=%g", th), func(b *testing.B) {
			opts := DefaultOptions()
			opts.Threshold = th
			var p *Plan
			var err error
			start := time.Now()
			n := 0
			for b.Loop() {
				p, err = Compute(st, stats, opts)
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(n), "ms/plan")
			b.ReportMetric(p.MaxMeanBefore, "max/mean-before")
			b.ReportMetric(p.MaxMeanAfter, "max/mean-after")
			b.ReportMetric(p.LowerBound, "lower-bound")
			b.ReportMetric(float64(p.BytesToMove)/float64(p.BytesFloor), "bytes/floor")
			b.ReportMetric(float64(p.Moves), "moves")
			b.ReportMetric(float64(p.Splits), "splits")
			b.ReportMetric(float64(p.BytesToMove)/float64(1<<50), "moved/total-bytes")
		})
	}
}
