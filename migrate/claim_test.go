package migrate

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// driverOn is the executor of another driver process: its own etcd client and store
// named holder, over the fleet's catalog. close plays the process dying: no more renewals
// of its leases, no more catalog writes.
func (f *fleet) driverOn(holder string, opts ExecOptions) (ex *Executor, close func()) {
	f.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.store.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cli.Close() })
	store, err := catalog.NewStore(cli, "plan", catalog.WithHolder(holder))
	if err != nil {
		f.t.Fatal(err)
	}
	ex = f.executor(opts)
	ex.Catalog = store
	ex.Lock = func(ctx context.Context, id string) (*catalog.Lock, error) {
		return store.TryLockMigration(ctx, id, catalog.WithTTL(3))
	}
	return ex, func() { cli.Close() }
}

// overlapping reports the pairs of migrations that share a shard and were active at once
// (journal created to last written).
func overlapping(ms []catalog.Migration) []string {
	var out []string
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			shared := a.Source == b.Source || a.Source == b.Target || a.Target == b.Source || a.Target == b.Target
			if shared && a.Created.Before(b.Updated) && b.Created.Before(a.Updated) {
				out = append(out, fmt.Sprintf("%s (%s -> %s, %s to %s) and %s (%s -> %s, %s to %s)",
					a.ID, a.Source, a.Target, a.Created.Format(time.StampMicro), a.Updated.Format(time.StampMicro),
					b.ID, b.Source, b.Target, b.Created.Format(time.StampMicro), b.Updated.Format(time.StampMicro)))
			}
		}
	}
	return out
}

// TestDriversShareAPlanOneMovePerShard: two drivers (own etcd clients, own names) apply one
// plan of four moves at once, each allowed two moves at a time. Both end without error and
// report every move done; each move is run by one driver and flipped once; no two moves
// that share a shard ever ran at once, whichever drivers ran them; and every tenant's rows,
// on every shard, are on their owner exactly as they were.
func TestDriversShareAPlanOneMovePerShard(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 4)
	p := f.sharedShardsPlan("pshared")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ranBy   = map[string][]string{}
		applied = map[string]*Applied{}
		errs    = map[string]error{}
	)
	for _, name := range []string{"driver-a", "driver-b"} {
		ex, _ := f.driverOn(name, ExecOptions{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := ex.ApplyPlan(ctx, p, ApplyOptions{Parallel: 2, Moved: func(s planner.Step, m *catalog.Migration) {
				mu.Lock()
				ranBy[m.ID] = append(ranBy[m.ID], name)
				mu.Unlock()
			}})
			mu.Lock()
			applied[name], errs[name] = a, err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if a := applied[name]; a == nil || len(a.Plan) != 4 {
			t.Errorf("%s reports %+v; want the plan's four moves", name, a)
		}
	}
	st := f.check(ctx)
	flips, _ := f.history(ctx)
	var ms []catalog.Migration
	for _, s := range p.Steps[1:] {
		id := fmt.Sprintf("pshared_%d", s.N)
		m, ok := st.Migrations[id]
		if !ok || m.Phase != catalog.PhaseDone || flips[id] != 1 || len(ranBy[id]) != 1 {
			t.Errorf("step %d: %s, flipped %d times, finished by %v; want done, flipped once, by one driver", s.N, m.Phase, flips[id], ranBy[id])
		}
		ms = append(ms, m)
	}
	t.Logf("moves finished by: %v", ranBy)
	for _, o := range overlapping(ms) {
		t.Errorf("moves %s share a shard and ran at once", o)
	}
}

// TestDriverTakesOverAStepWhoseDriverDied: driver A claims a move and dies in it (its etcd
// client closes once the move is caught up: no more lease renewals, no catalog writes);
// driver B, started then, finds that step locked and the plan's other move blocked by the
// dead driver's shard slot, waits, claims both once A's lease expires, resumes A's step
// from its journal and finishes the plan: each move flipped once, every tenant's rows on
// every shard where the catalog says.
func TestDriverTakesOverAStepWhoseDriverDied(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 3)
	r1 := f.ranges[0]
	sp := split(r1, f.cuts(r1.Range, 2)...)
	p := f.plan("ptakeover", sp, move(sp.Parts[0], "s1", "s2"), move(sp.Parts[1], "s1", "s3"))

	died := make(chan struct{})
	var once sync.Once
	var kill func()
	exA, killA := f.driverOn("driver-a", ExecOptions{BeforeCutover: func() {
		once.Do(func() { kill(); close(died) })
	}})
	kill = killA
	aDone := make(chan error, 1)
	go func() {
		_, err := exA.ApplyPlan(ctx, p, ApplyOptions{})
		aDone <- err
	}()
	select {
	case <-died:
	case err := <-aDone:
		t.Fatalf("driver A ended before it died in its move: %v", err)
	case <-time.After(3 * time.Minute):
		t.Fatal("driver A never caught up its first move")
	}
	orphan, err := f.store.GetMigration(ctx, "ptakeover_2")
	if err != nil || orphan.Flipped() {
		t.Fatalf("the dead driver's step: %+v, %v; want started, not flipped", orphan, err)
	}

	exB, _ := f.driverOn("driver-b", ExecOptions{})
	var moved []int
	applied, err := exB.ApplyPlan(ctx, p, ApplyOptions{Moved: func(s planner.Step, _ *catalog.Migration) { moved = append(moved, s.N) }})
	if err != nil {
		t.Fatalf("driver B: %v", err)
	}
	t.Logf("driver A ended with: %v", <-aDone)
	if len(moved) != 2 || len(applied.Plan) != 2 {
		t.Errorf("driver B finished steps %v and reports %d moves; want steps 2 (taken over) and 3", moved, len(applied.Plan))
	}
	st := f.check(ctx)
	flips, _ := f.history(ctx)
	for _, id := range []string{"ptakeover_2", "ptakeover_3"} {
		if m := st.Migrations[id]; m.Phase != catalog.PhaseDone || flips[id] != 1 {
			t.Errorf("migration %s: %s, flipped %d times; want done, flipped once", id, m.Phase, flips[id])
		}
	}
}
