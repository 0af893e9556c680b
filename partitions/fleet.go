package partitions

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Connector opens one session on a shard. Its error must not carry a password.
type Connector func(ctx context.Context, sh catalog.Shard) (*pgx.Conn, error)

// FleetOptions tune Fleet.
type FleetOptions struct {
	Options
	DryRun   bool // Plan instead of Apply
	Parallel int  // shards worked on at once; default 4
	// Migrations are the catalog's: retention waits on the shards of those that have not
	// flipped (MovesOn).
	Migrations map[string]catalog.Migration
}

// Fleet plans or applies the specs on every shard, several shards at a time, and returns
// one report per shard in name order. A shard that cannot be reached, or is busy with
// another apply, gets a report with Error set; the others go on. The error is for bad
// specs (nothing is done) or a cancelled context.
func Fleet(ctx context.Context, shards map[string]catalog.Shard, specs []catalog.PartitionSpec, now time.Time, fo FleetOptions, connect Connector) ([]*Report, error) {
	if _, err := normalize(specs); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(shards))
	for n := range shards {
		names = append(names, n)
	}
	sort.Strings(names)
	par := fo.Parallel
	if par <= 0 {
		par = 4
	}
	reps := make([]*Report, len(names))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				reps[i] = &Report{Shard: name, Now: now, DryRun: fo.DryRun, Error: ctx.Err().Error()}
				return
			}
			reps[i] = oneShard(ctx, shards[name], specs, now, fo, connect)
		}()
	}
	wg.Wait()
	return reps, ctx.Err()
}

func oneShard(ctx context.Context, sh catalog.Shard, specs []catalog.PartitionSpec, now time.Time, fo FleetOptions, connect Connector) *Report {
	fail := func(err error) *Report {
		return &Report{Shard: sh.Name, Now: now, DryRun: fo.DryRun, Error: err.Error()}
	}
	conn, err := connect(ctx, sh)
	if err != nil {
		return fail(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var rep *Report
	opts := fo.Options
	opts.HoldRetention = MovesOn(sh.Name, fo.Migrations)
	if fo.DryRun {
		rep, err = Plan(ctx, conn, specs, now, opts)
	} else {
		rep, err = Apply(ctx, conn, specs, now, opts)
	}
	if rep == nil {
		return fail(err)
	}
	rep.Shard = sh.Name
	if err != nil {
		rep.Error = err.Error()
	}
	return rep
}
