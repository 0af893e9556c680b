package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/migrate/migratetest"
	"github.com/reshard/reshard/mover"
	"github.com/reshard/reshard/planner"
)

// fleet is n shards with the demo schema and data, a catalog that splits the key line
// evenly over them (s1 holds the heaviest tenants), and the fingerprint of every tenant's
// rows on every shard taken before any step: the plan runner's tests move real rows with
// the real mover.
type fleet struct {
	t     *testing.T
	store *catalog.Store
	conns map[string]*pgx.Conn
	base  demo.Baseline
	// ranges are the catalog's ranges at the start, in key order: ranges[i] on s<i+1>.
	ranges  []catalog.Range
	tenants []demo.Tenant
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	ctx := context.Background()
	pgs := testenv.Postgres(t, n)
	_, cli := testenv.Etcd(t)
	store, err := catalog.NewStore(cli, "plan")
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, store: store, conns: map[string]*pgx.Conn{}}
	var names []string
	var shards []catalog.Shard
	for i, p := range pgs {
		name := fmt.Sprintf("s%d", i+1)
		names = append(names, name)
		shards = append(shards, catalog.Shard{Name: name, DSN: p.DSNApp()})
		c, err := pgx.Connect(ctx, p.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		f.conns[name] = c
		if err := demo.CreateSchema(ctx, c, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	f.ranges = catalog.EvenRanges(names)
	opts := demo.DataOptions{Tenants: 8 * n, Scale: 0.03, Seed: 11, HotRange: f.ranges[0].Range}
	if f.tenants, err = demo.GenerateTenants(opts); err != nil {
		t.Fatal(err)
	}
	placed, err := demo.Place(f.tenants, f.ranges)
	if err != nil {
		t.Fatal(err)
	}
	for name, ts := range placed {
		if _, err := demo.LoadShard(ctx, f.conns[name], ts, opts); err != nil {
			t.Fatal(err)
		}
	}
	cfg := catalog.Config{Cluster: "plan", Key: demo.Key, Tables: demo.Tables}
	if err := store.Init(ctx, cfg, shards, f.ranges, false); err != nil {
		t.Fatal(err)
	}
	snap, err := demo.TakeSnapshot(ctx, f.queriers(), demo.Tables)
	if err != nil {
		t.Fatal(err)
	}
	f.base = demo.Baseline{Taken: time.Now(), Tables: demo.Tables, Snapshot: snap}
	return f
}

// cuts are keys that cut r into parts holding about as many tenants each.
func (f *fleet) cuts(r catalog.KeyRange, parts int) []int64 {
	var ids []int64
	for _, tn := range f.tenants {
		if r.Contains(tn.ID) {
			ids = append(ids, tn.ID)
		}
	}
	slices.Sort(ids)
	if len(ids) < parts {
		f.t.Fatalf("%d tenants in %s: too few for %d parts", len(ids), r, parts)
	}
	var at []int64
	for i := 1; i < parts; i++ {
		at = append(at, ids[i*len(ids)/parts])
	}
	return at
}

func (f *fleet) queriers() map[string]demo.Querier {
	return migratetest.Queriers(f.conns)
}

// executor is the executor behind `reshard apply`, with the real mover and preflight.
func (f *fleet) executor(opts ExecOptions) *Executor {
	cfg := func(m *catalog.Migration, src, dst string) mover.Config {
		return mover.Config{ID: m.ID, SourceDSN: src, TargetDSN: dst, Key: demo.Key, Tables: demo.Tables,
			Range: m.Range, Workers: 2, MaxConnections: 6}
	}
	return &Executor{
		Catalog: f.store,
		DSN:     catalog.Shard.ConnString,
		Lock: func(ctx context.Context, id string) (*catalog.Lock, error) {
			return f.store.TryLockMigration(ctx, id, catalog.WithTTL(5))
		},
		NewMover: func(m *catalog.Migration, src, dst string, j *Journal, token int64) (Mover, error) {
			c := cfg(m, src, dst)
			c.Token = token
			return mover.New(c, j)
		},
		Preflight: func(ctx context.Context, m *catalog.Migration, src, dst string) error {
			return mover.Preflight(ctx, cfg(m, src, dst))
		},
		Options: ExecOptions{CutoverRetries: 3, BeforeCutover: opts.BeforeCutover},
	}
}

// plan is a plan of steps over the fleet's catalog as it is now: it records the revision
// of every range a step starts in.
func (f *fleet) plan(id string, steps ...planner.Step) *planner.Plan {
	f.t.Helper()
	st, err := f.store.Load(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	p := &planner.Plan{Version: planner.FormatVersion, ID: id, Cluster: "plan", Revision: st.Revision}
	seen := map[int64]bool{}
	for i, s := range steps {
		s.N = i + 1
		if s.Kind == planner.StepSplit {
			p.Splits++
		} else {
			p.Moves++
		}
		p.Steps = append(p.Steps, s)
		r, _ := st.Owner(s.Range.Lo)
		if !seen[r.Range.Lo] {
			seen[r.Range.Lo] = true
			key := catalog.RangeKey(r.Range.Lo)
			p.Ranges = append(p.Ranges, planner.RangeRevision{Range: r.Range, Key: key, ModRevision: st.ModRev[key]})
		}
	}
	return p
}

// sharedShardsPlan is plan id over a 4-shard fleet whose moves share shards: the first
// range split in two, its lower part moved s1 -> s2, the third range s3 -> s4 (sharing no
// shard with the first move: it may run beside it), the upper part s1 -> s3 and the second
// range s2 -> s4.
func (f *fleet) sharedShardsPlan(id string) *planner.Plan {
	r1, r2, r3 := f.ranges[0], f.ranges[1], f.ranges[2]
	sp := split(r1, f.cuts(r1.Range, 2)...)
	return f.plan(id, sp,
		move(sp.Parts[0], "s1", "s2"),
		move(r3.Range, "s3", "s4"),
		move(sp.Parts[1], "s1", "s3"),
		move(r2.Range, "s2", "s4"))
}

// split is a plan step that splits catalog range r of shard from at the keys at.
func split(r catalog.Range, at ...int64) planner.Step {
	s := planner.Step{Kind: planner.StepSplit, Range: r.Range, At: at, From: r.Shard}
	rest := r.Range
	for _, k := range at {
		lo, hi, _ := rest.Split(k)
		s.Parts = append(s.Parts, lo)
		rest = hi
	}
	s.Parts = append(s.Parts, rest)
	return s
}

func move(r catalog.KeyRange, from, to string) planner.Step {
	return planner.Step{Kind: planner.StepMove, Range: r, From: from, To: to}
}

// check verifies the end state: a valid catalog with every range serving, no reshard slot
// or publication left, and every tenant's rows, on every shard, on its owner only and
// exactly as they were at the start (nothing else writes), balances equal to ledgers.
func (f *fleet) check(ctx context.Context) *catalog.State {
	t := f.t
	t.Helper()
	st := migratetest.Catalog(t, ctx, f.store)
	migratetest.NoReplicationLeft(t, ctx, f.conns)
	owner := func(tenant int64) string { r, _ := st.Owner(tenant); return r.Shard }
	rep, err := demo.CheckStack(ctx, f.queriers(), owner, &f.base, nil)
	if rep != nil && rep.Tenants != nil {
		var b strings.Builder
		rep.Tenants.Print(&b)
		t.Logf("every tenant's rows checked:\n%s", b.String())
	}
	if err != nil {
		t.Error(err)
	}
	return st
}

// flips counts the history's ownership flips per migration and splits per range.
func (f *fleet) history(ctx context.Context) (flips map[string]int, splits map[string]int) {
	f.t.Helper()
	evs, err := f.store.History(ctx, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	flips, splits = map[string]int{}, map[string]int{}
	for _, ev := range evs {
		switch ev.Kind {
		case catalog.EventFlip:
			flips[ev.Migration]++
		case catalog.EventSplit:
			splits[ev.Range.String()]++
		}
	}
	return flips, splits
}

// TestApplyRefusesAStalePlan: a plan whose range changed since it was made (here: moved
// to another shard, so that every move of the plan would still pass its prechecks) is
// refused before anything is written: no approval asked, no journal, the etcd revision
// and every tenant's rows on every shard unchanged.
func TestApplyRefusesAStalePlan(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 3)
	r2 := f.ranges[1]
	p := f.plan("pstale", move(r2.Range, "s2", "s3"))
	// After the plan was made, another move takes s2's range to s1.
	ex := f.executor(ExecOptions{})
	if _, err := ex.Move(ctx, MoveRequest{ID: "meanwhile", Range: r2.Range, Target: "s1"}); err != nil {
		t.Fatal(err)
	}
	before, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asked := false
	applied, err := ex.ApplyPlan(ctx, p, ApplyOptions{Approve: func() error { asked = true; return nil }})
	if !errors.Is(err, ErrStalePlan) || applied != nil {
		t.Fatalf("ApplyPlan = %+v, %v; want ErrStalePlan and nothing applied", applied, err)
	}
	if asked {
		t.Error("the approval was asked for a stale plan")
	}
	after := f.check(ctx)
	if after.Revision != before.Revision || len(after.Migrations) != 1 {
		t.Errorf("catalog at revision %d with %d migrations after the refusal; want %d and only the earlier move", after.Revision, len(after.Migrations), before.Revision)
	}
	if r, _ := after.Owner(r2.Range.Lo); r.Shard != "s1" {
		t.Errorf("range %s is on %s; want s1, where the earlier move left it", r2.Range, r.Shard)
	}
}

// TestApplyResumesAnInterruptedApply: an apply stopped after its first move finished, in
// the middle of its second (caught up, before the cutover), resumes on a re-run of the
// same plan and finishes every step exactly once: each split key split once, each move's
// migration flipped once and done, every tenant's rows where the catalog says.
func TestApplyResumesAnInterruptedApply(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 3)
	r1 := f.ranges[0]
	at := f.cuts(r1.Range, 3)
	sp := split(r1, at...)
	p := f.plan("presume", sp, move(sp.Parts[0], "s1", "s2"), move(sp.Parts[2], "s1", "s3"))

	actx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	firstDone := false
	ex := f.executor(ExecOptions{BeforeCutover: func() {
		mu.Lock()
		defer mu.Unlock()
		if firstDone {
			stop() // the second move is caught up: stop the apply as a crash would
		}
	}})
	applied, err := ex.ApplyPlan(actx, p, ApplyOptions{Moved: func(planner.Step, *catalog.Migration) {
		mu.Lock()
		firstDone = true
		mu.Unlock()
	}})
	if !errors.Is(err, context.Canceled) || applied == nil {
		t.Fatalf("interrupted apply = %+v, %v; want context.Canceled after the moves started", applied, err)
	}
	if m, err := f.store.GetMigration(ctx, "presume_3"); err != nil || m.Flipped() {
		t.Fatalf("the second move before the re-run: %+v, %v; want started, not flipped", m, err)
	}

	var moved []int
	applied, err = f.executor(ExecOptions{}).ApplyPlan(ctx, p, ApplyOptions{
		Split: func(s planner.Step) { t.Errorf("the re-run split again (step %d)", s.N) },
		Moved: func(s planner.Step, _ *catalog.Migration) { moved = append(moved, s.N) },
	})
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	// Step 2 was done before the re-run: it is skipped, and reported with the plan's moves.
	if len(moved) != 1 || moved[0] != 3 || len(applied.Migrations) != 1 || len(applied.Plan) != 2 {
		t.Errorf("re-run finished steps %v, %d migrations, reports %d of the plan; want step 3 only, and both of the plan's moves", moved, len(applied.Migrations), len(applied.Plan))
	}
	st := f.check(ctx)
	flips, splits := f.history(ctx)
	for _, id := range []string{"presume_2", "presume_3"} {
		if m := st.Migrations[id]; m.Phase != catalog.PhaseDone || flips[id] != 1 {
			t.Errorf("migration %s: %s, flipped %d times; want done, flipped once", id, m.Phase, flips[id])
		}
	}
	if n := splits[r1.Range.String()] + splits[catalog.NewRange(at[0], r1.Range.Hi).String()]; n != 2 {
		t.Errorf("%d splits of %s in the history (%v); want 2, one per key", n, r1.Range, splits)
	}
	for i, want := range []string{"s2", "s1", "s3"} {
		if r, _ := st.Owner(sp.Parts[i].Lo); !r.Range.Equal(sp.Parts[i]) || r.Shard != want {
			t.Errorf("part %s: %+v; want its own range on %s", sp.Parts[i], r, want)
		}
	}
}

// TestApplyNeverRunsTwoMovesOnOneShard: with --parallel above 1, moves that share a shard
// never run at the same time: each move's active interval (its journal's creation to its
// last write) is disjoint from that of every other move on one of its shards.
func TestApplyNeverRunsTwoMovesOnOneShard(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 4)
	p := f.sharedShardsPlan("pparallel")
	if _, err := f.executor(ExecOptions{}).ApplyPlan(ctx, p, ApplyOptions{Parallel: 3}); err != nil {
		t.Error(err) // and see below whether moves overlapped
	}
	st := f.check(ctx)
	var ms []catalog.Migration
	for _, s := range p.Steps[1:] {
		m, ok := st.Migrations[fmt.Sprintf("pparallel_%d", s.N)]
		if !ok || m.Phase != catalog.PhaseDone {
			t.Errorf("step %d: %+v; want done", s.N, m)
		}
		if ok {
			ms = append(ms, m)
		}
	}
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			shared := a.Source == b.Source || a.Source == b.Target || a.Target == b.Source || a.Target == b.Target
			overlap := a.Created.Before(b.Updated) && b.Created.Before(a.Updated)
			if shared && overlap {
				t.Errorf("moves %s (%s -> %s, %s to %s) and %s (%s -> %s, %s to %s) share a shard and ran at once",
					a.ID, a.Source, a.Target, a.Created.Format(time.StampMicro), a.Updated.Format(time.StampMicro),
					b.ID, b.Source, b.Target, b.Created.Format(time.StampMicro), b.Updated.Format(time.StampMicro))
			}
		}
	}
}

// TestMoveThatEndsDoneKeepsNoCopyPlan: a real move (the real mover, PostgreSQL and etcd)
// has its copy plan in etcd until its cutover, and once it is done none of it is left;
// its record still reports the copy's tables, rows and runs, and every tenant's rows on
// every shard are as they were, on their owner only.
func TestMoveThatEndsDoneKeepsNoCopyPlan(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2)
	sp := split(f.ranges[0], f.cuts(f.ranges[0].Range, 2)...)
	p := f.plan("pend", sp, move(sp.Parts[0], "s1", "s2"))
	atCutover := -1
	ex := f.executor(ExecOptions{BeforeCutover: func() { atCutover = migratetest.PlanPages(t, ctx, f.store, "pend_2") }})
	if _, err := ex.ApplyPlan(ctx, p, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st := f.check(ctx)
	if atCutover <= 0 {
		t.Fatalf("%d pages of the copy plan at the cutover, want the plan there", atCutover)
	}
	if n := migratetest.PlanPages(t, ctx, f.store, "pend_2"); n != 0 {
		t.Fatalf("%d keys under copyplans/pend_2/ once the move is done (%d at its cutover), want none", n, atCutover)
	}
	m := st.Migrations["pend_2"]
	chunks := 0
	for _, tp := range m.Tables {
		chunks += tp.ChunksTotal
	}
	if m.Phase != catalog.PhaseDone || m.RowsCopied == 0 || chunks == 0 || m.Copy == nil || m.Copy.Runs != 1 || len(m.Copy.Tables) != len(m.Tables) {
		t.Errorf("the done move's record: %s, %d rows, %d chunks, copy %+v; want done with its totals", m.Phase, m.RowsCopied, chunks, m.Copy)
	}
}
