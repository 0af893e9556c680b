package catalog_test

import (
	"fmt"

	"github.com/reshard/reshard/catalog"
)

// A router resolves each tenant to its shard from a cache of the catalog. In a service the
// cache follows etcd (cache, err := store.Watch(ctx)); here it holds a state built by hand.
// The range 1000:5000 is frozen: a cutover is fencing its writes, so a router holds them
// (Resolver.WaitServing) and sends them where the next route says.
func ExampleNewResolver() {
	state := &catalog.State{
		Revision: 7,
		Ranges: []catalog.Range{
			{Range: catalog.Below(1000), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(1000, 5000), Shard: "s2", State: catalog.RangeFrozen, Epoch: 3, Migration: "m-1000-5000"},
			{Range: catalog.From(5000), Shard: "s3", State: catalog.RangeServing, Epoch: 2},
		},
	}
	cache := catalog.NewStaticCache(state)
	defer cache.Close()
	r := catalog.NewResolver(cache)
	for _, tenant := range []int64{42, 1234, 99999} {
		rt, err := r.Resolve(tenant)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("tenant %d: shard %s, range %s, %s, epoch %d\n", tenant, rt.Shard, rt.Range, rt.State, rt.Epoch)
	}
	// Output:
	// tenant 42: shard s1, range :1000, serving, epoch 1
	// tenant 1234: shard s2, range 1000:5000, frozen, epoch 3
	// tenant 99999: shard s3, range 5000:, serving, epoch 2
}
