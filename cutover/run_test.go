package cutover

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// copiedReplicator stands for a mover whose copy is already complete and whose source is
// fenced: WaitApplied has nothing left to wait for. It moves no data; the tests that
// claim data moved use the real mover (integration package).
type copiedReplicator struct{ stopped, dropped, cancelled int }

func (r *copiedReplicator) WaitApplied(context.Context, pglogrepl.LSN) error { return nil }
func (r *copiedReplicator) Stop(context.Context) error                       { r.stopped++; return nil }
func (r *copiedReplicator) DropReplication(context.Context) error            { r.dropped++; return nil }
func (r *copiedReplicator) Remove(context.Context, bool) error               { r.cancelled++; return nil }

type fixture struct {
	env   Env
	store *catalog.Store
	rng   catalog.KeyRange
}

func setup(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	_, cli := testenv.Etcd(t)
	store, err := catalog.NewStore(cli, "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pgs {
		p.Exec(ctx, schema)
	}
	tables := []string{"tenants", "orders"}
	cfg := catalog.Config{Cluster: "t", Key: "tenant_id", Tables: tables}
	shards := []catalog.Shard{{Name: "s1", DSN: pgs[0].DSNApp()}, {Name: "s2", DSN: pgs[1].DSNApp()}}
	rng := catalog.NewRange(10, 20)
	ranges := []catalog.Range{
		{Range: catalog.Below(10), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		{Range: rng, Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		{Range: catalog.From(20), Shard: "s2", State: catalog.RangeServing, Epoch: 1},
	}
	if err := store.Init(ctx, cfg, shards, ranges, false); err != nil {
		t.Fatal(err)
	}
	fill := `INSERT INTO tenants SELECT g, 't' || g FROM generate_series(0, 29) g;
		INSERT INTO orders (tenant_id, total) SELECT g % 30, g FROM generate_series(1, 900) g`
	pgs[0].Exec(ctx, fill)
	// The target holds the range's rows, as a finished copy would.
	pgs[1].Exec(ctx, fill)
	pgs[1].Exec(ctx, `DELETE FROM orders WHERE tenant_id < 10 OR tenant_id >= 20; DELETE FROM tenants WHERE tenant_id < 10 OR tenant_id >= 20`)
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	if err := InstallGuard(ctx, src, "tenant_id", tables); err != nil {
		t.Fatal(err)
	}
	return fixture{env: Env{Catalog: store, Source: src, Target: dst, Key: "tenant_id", Tables: tables}, store: store, rng: rng}
}

func newMigration(t *testing.T, f fixture) *catalog.Migration {
	t.Helper()
	m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: f.rng, Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp}
	if err := f.store.PutMigration(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunFlips(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	rep := &copiedReplicator{}
	f.env.Mover = rep
	m := newMigration(t, f)
	res, err := Run(ctx, f.env, m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 310 || res.FenceLSN == 0 || res.Window <= 0 || rep.stopped != 1 {
		t.Errorf("result = %+v, replicator %+v", res, rep)
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := st.Owner(15)
	if r.Shard != "s2" || r.State != catalog.RangeServing || r.Epoch != 2 {
		t.Errorf("after flip, owner of 15 = %+v; want s2, serving, epoch 2", r)
	}
	got, _ := f.store.GetMigration(ctx, "m1")
	if got.Phase != catalog.PhaseFlipped || got.Timings.CutoverWindow <= 0 || got.FenceLSN == "" {
		t.Errorf("journal = %+v", got)
	}
	// The fence stays: a stale write to the old shard fails loudly.
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); !IsFenceError(err) {
		t.Errorf("stale write after flip: %v, want fence error", err)
	}
}

func TestRunUndoesOnMismatch(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	if _, err := f.env.Target.Exec(ctx, `DELETE FROM orders WHERE tenant_id = 15 AND id = (SELECT min(id) FROM orders WHERE tenant_id = 15)`); err != nil {
		t.Fatal(err)
	}
	m := newMigration(t, f)
	_, err := Run(ctx, f.env, m, Options{})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("Run = %v, want ErrMismatch", err)
	}
	st, _ := f.store.Load(ctx)
	r, _ := st.Owner(15)
	if r.Shard != "s1" || r.State != catalog.RangeServing || r.Epoch != 1 {
		t.Errorf("after a failed cutover, owner of 15 = %+v; want s1 serving epoch 1", r)
	}
	if m.Phase != catalog.PhaseCatchingUp {
		t.Errorf("phase = %s, want catching_up (cutover undone, copy kept)", m.Phase)
	}
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); err != nil {
		t.Errorf("write after undo: %v", err)
	}
	// A full rollback ends the migration.
	rep := &copiedReplicator{}
	f.env.Mover = rep
	if err := Rollback(ctx, f.env, m, err); err != nil {
		t.Fatal(err)
	}
	got, _ := f.store.GetMigration(ctx, "m1")
	if got.Phase != catalog.PhaseRolledBack || got.LastError == "" || rep.cancelled != 1 {
		t.Errorf("after rollback: %+v, replicator %+v", got, rep)
	}
}

// TestFlipRefusedTwice: once flipped, a second driver's cutover of the same migration is
// refused by the catalog, and Rollback refuses too.
func TestFlipRefusedTwice(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	stale := *m
	if _, err := Run(ctx, f.env, m, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, f.env, &stale, Options{}); err == nil {
		t.Fatal("a second cutover of a flipped migration must fail")
	}
	if err := Rollback(ctx, f.env, &stale, nil); err == nil {
		t.Fatal("rollback of a flipped migration must fail")
	}
	st, _ := f.store.Load(ctx)
	if err := catalog.ValidateState(st); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Owner(15); r.Shard != "s2" || r.Epoch != 2 {
		t.Errorf("owner = %+v", r)
	}
}

// TestRunUndoneWhenGuardMissing: a cutover whose source lost its guard trigger on a table
// (removed by hand, or by a cleanup that raced the migration) fails right after setting
// the fence and is undone: the range serves from the source again, no fence is left.
func TestRunUndoneWhenGuardMissing(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	if _, err := f.env.Source.Exec(ctx, `DROP TRIGGER reshard_fence ON orders`); err != nil {
		t.Fatal(err)
	}
	m := newMigration(t, f)
	if _, err := Run(ctx, f.env, m, Options{}); !errors.Is(err, ErrGuardMissing) {
		t.Fatalf("Run = %v, want ErrGuardMissing", err)
	}
	st, _ := f.store.Load(ctx)
	if r, _ := st.Owner(15); r.Shard != "s1" || r.State != catalog.RangeServing {
		t.Errorf("after the failed cutover, owner of 15 = %+v; want s1 serving", r)
	}
	var fences int
	if err := f.env.Source.QueryRow(ctx, `SELECT count(*) FROM reshard.fence`).Scan(&fences); err != nil || fences != 0 {
		t.Errorf("fences left: %d, %v", fences, err)
	}
}

// fakeMover is a copiedReplicator that the executor can start (for Cancel).
type fakeMover struct{ *copiedReplicator }

func (fakeMover) Start(context.Context) error                 { return nil }
func (fakeMover) Lag(context.Context) (int64, float64, error) { return 0, 0, nil }
func (fakeMover) Err() error                                  { return nil }

// guardLeft counts the guard triggers and functions on a shard.
func guardLeft(t *testing.T, db Querier) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence')
		+ (SELECT count(*) FROM pg_proc WHERE proname = 'fence_guard')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRollbackAndCancelRemoveGuard: a rolled back or cancelled migration leaves no guard
// trigger or function on its source or target (the target is fenced too until the flip),
// unless another unfinished migration still uses the shard.
func TestRollbackAndCancelRemoveGuard(t *testing.T) {
	tests := []struct {
		name     string
		cancel   bool
		other    bool // another unfinished migration s1 -> s2
		wantKept bool
	}{
		{"rollback", false, false, false},
		{"cancel", true, false, false},
		{"rollback while another migration uses the shards", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := setup(t)
			if err := InstallGuard(ctx, f.env.Target, f.env.Key, f.env.Tables); err != nil {
				t.Fatal(err)
			}
			m := newMigration(t, f)
			if tt.other {
				o := &catalog.Migration{ID: "other", Kind: catalog.KindMove, Range: catalog.Below(10), Source: "s1", Target: "s2", Phase: catalog.PhaseCopying}
				if err := f.store.PutMigration(ctx, o); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tt.cancel {
				ex := &Executor{Catalog: f.store, DSN: catalog.Shard.ConnString,
					Lock: func(ctx context.Context, id string) (*catalog.Lock, error) {
						return f.store.TryLockMigration(ctx, id)
					},
					NewMover: func(*catalog.Migration, string, string, *Journal, int64) (Mover, error) {
						return fakeMover{&copiedReplicator{}}, nil
					}}
				_, err = ex.Cancel(ctx, m.ID)
			} else {
				f.env.Mover = &copiedReplicator{}
				err = Rollback(ctx, f.env, m, errors.New("test"))
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, db := range map[string]Querier{"source": f.env.Source, "target": f.env.Target} {
				if n := guardLeft(t, db); (n > 0) != tt.wantKept {
					t.Errorf("%s: %d guard triggers and functions left, want kept=%v", name, n, tt.wantKept)
				}
			}
		})
	}
}
