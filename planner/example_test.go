package planner_test

import (
	"fmt"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// Three shards, where s1 holds most of the data and tenant 42 alone writes more than a
// shard's share: the plan gives tenant 42 a range of its own and moves load off s1. The
// state and stats would come from catalog.Store's Load and LoadStats.
func ExampleCompute() {
	state := &catalog.State{
		Revision: 12,
		Config:   catalog.Config{Cluster: "demo", Key: "tenant_id"},
		Shards: map[string]catalog.Shard{
			"s1": {Name: "s1", DSN: "host=db1 dbname=app"},
			"s2": {Name: "s2", DSN: "host=db2 dbname=app"},
			"s3": {Name: "s3", DSN: "host=db3 dbname=app"},
		},
		Ranges: []catalog.Range{
			{Range: catalog.Below(1000), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(1000, 2000), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(2000, 3000), Shard: "s2", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.From(3000), Shard: "s3", State: catalog.RangeServing, Epoch: 1},
		},
	}
	stats := &catalog.Stats{
		Ranges: []catalog.RangeStats{
			{Range: catalog.Below(1000), Bytes: 40 << 30, WritesPerSec: 900},
			{Range: catalog.NewRange(1000, 2000), Bytes: 30 << 30, WritesPerSec: 300},
			{Range: catalog.NewRange(2000, 3000), Bytes: 20 << 30, WritesPerSec: 200},
			{Range: catalog.From(3000), Bytes: 20 << 30, WritesPerSec: 200},
		},
		HotKeys: []catalog.HotKey{{Key: 42, Bytes: 4 << 30, WritesPerSec: 600}},
	}

	p, err := planner.Compute(state, stats, planner.DefaultOptions())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range p.Steps {
		switch s.Kind {
		case planner.StepSplit:
			fmt.Printf("%d. split %s at %v: %s\n", s.N, s.Range, s.At, s.Reason)
		case planner.StepMove:
			fmt.Printf("%d. move %s from %s to %s: %s\n", s.N, s.Range, s.From, s.To, s.Reason)
		}
	}
	for _, sh := range p.Shards {
		fmt.Printf("%s: load %.2f -> %.2f of the mean\n", sh.Shard, sh.Load, sh.LoadAfter)
	}
	// Output:
	// 1. split :1000 at [42 43]: tenant 42 alone carries 0.62x the mean load (44% of range :1000 at 1.39x): give it its own range so it can move alone
	// 2. split 1000:2000 at [1669]: cut 0.46x of load off range 1000:2000 (0.69x) so that only what s1 should shed moves
	// 3. move 42:43 from s1 to s2: s1 is at 2.08x the mean and s2 at 0.46x: moving 0.62x brings them to 1.46x and 1.08x
	// 4. move 1000:1669 from s1 to s3: s1 is at 1.46x the mean and s3 at 0.46x: moving 0.46x brings them to 1.00x and 0.92x
	// s1: load 2.08 -> 1.00 of the mean
	// s2: load 0.46 -> 1.08 of the mean
	// s3: load 0.46 -> 0.92 of the mean
}
