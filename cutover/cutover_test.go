package cutover

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
)

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
}

// TestFlipRefusedTwice: once flipped, a second driver's cutover of the same migration is
// refused by the catalog (migrate's TestRollbackRefusedAfterFlip: so is its rollback).
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

// TestRunJournalsWindowSteps: the cutover's steps are kept in the journal, in order, by the
// names docs/catalog.md gives them: the flip's own write carries the steps before it, and
// the migration Run hands back (which the executor journals next) all of them through open.
func TestRunJournalsWindowSteps(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	if _, err := Run(ctx, f.env, m, Options{}); err != nil {
		t.Fatal(err)
	}
	names := func(steps []catalog.WindowStep) []string {
		var out []string
		for _, s := range steps {
			if s.Seconds < 0 {
				t.Errorf("step %s took %v s", s.Step, s.Seconds)
			}
			out = append(out, s.Step)
		}
		return out
	}
	atFlip := []string{"freeze", "fence", "drain", "catch-up", "verify", "sequences"}
	got, err := f.store.GetMigration(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := names(got.Timings.Window); !slices.Equal(n, atFlip) {
		t.Errorf("journal at the flip: window steps %v, want %v", n, atFlip)
	}
	if n := names(m.Timings.Window); !slices.Equal(n, append(atFlip, "flip", "open")) {
		t.Errorf("after Run: window steps %v, want %v", n, append(atFlip, "flip", "open"))
	}
}

// TestRunReadsItsRangeNotTheWholeCatalog: a cutover reads of the catalog only what its
// compares need (the config, its range, its two shards, its migration, the history
// counter), before and inside the window, however many ranges the catalog holds. Here
// 5,000: a read of the whole catalog would be over 5,000 keys, seconds at a million.
func TestRunReadsItsRangeNotTheWholeCatalog(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	manyRanges(t, f, 5000)
	var keys atomic.Int64
	f.env.Catalog = countingStore(t, f.store, &keys)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	var atFreeze, inWindow int64
	keys.Store(0)
	_, err := Run(ctx, f.env, m, Options{AfterStep: func(step string) {
		switch step {
		case "freeze":
			atFreeze = keys.Load()
		case "flip":
			inWindow = keys.Load() - atFreeze
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if total := keys.Load(); total > 20 || inWindow > 10 {
		t.Errorf("the cutover read %d keys of a catalog of 5,000 ranges, %d of them between the freeze and the flip; want at most 20 and 10", total, inWindow)
	}
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Owner(15); r.Shard != "s2" || r.State != catalog.RangeServing || r.Epoch != 2 || len(st.Ranges) != 5000 {
		t.Errorf("after the flip, owner of 15 = %+v, %d ranges; want s2, serving, epoch 2, 5000 ranges", r, len(st.Ranges))
	}
}

// TestFlipFailsOnAChangeInTheWindow: the flip compares the range's revision as the freeze
// wrote it and the migration's as the window's journal write left it: a change of either
// by anyone else in the window (here a write of the same value, after the given step)
// fails the flip, and the cutover is undone: the range serves on the source, unfenced.
func TestFlipFailsOnAChangeInTheWindow(t *testing.T) {
	for _, tc := range []struct {
		name, key, after string
	}{
		{"range, before the journal write", catalog.RangeKey(10), "fence"},
		{"range, after the journal write", catalog.RangeKey(10), "verify"},
		{"migration, after the journal write", catalog.MigrationKey("m1"), "verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := setup(t)
			f.env.Mover = &copiedReplicator{}
			m := newMigration(t, f)
			cli := etcdClient(t, f.store)
			touch := func() {
				resp, err := cli.Get(ctx, "/reshard/t/"+tc.key)
				if err == nil && len(resp.Kvs) == 1 {
					_, err = cli.Put(ctx, "/reshard/t/"+tc.key, string(resp.Kvs[0].Value))
				}
				if err != nil {
					t.Errorf("touch %s: %v", tc.key, err)
				}
			}
			_, err := Run(ctx, f.env, m, Options{AfterStep: func(step string) {
				if step == tc.after {
					touch()
				}
			}})
			if err == nil {
				t.Fatalf("Run flipped though %s changed after %s", tc.key, tc.after)
			}
			st, lerr := f.store.Load(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if r, _ := st.Owner(15); r.Shard != "s1" || r.State != catalog.RangeServing || r.Epoch != 1 {
				t.Errorf("Run = %v; owner of 15 = %+v; want s1 serving epoch 1 (undone)", err, r)
			}
			if _, werr := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); werr != nil {
				t.Errorf("write to the source after the undo: %v", werr)
			}
		})
	}
}

// manyRanges re-initialises f's catalog with n ranges: the fixture's first two, and
// one-key ranges from 20 on s2.
func manyRanges(t *testing.T, f fixture, n int) {
	t.Helper()
	ctx := context.Background()
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ranges := append([]catalog.Range(nil), st.Ranges[:2]...)
	for lo := int64(20); len(ranges) < n-1; lo++ {
		ranges = append(ranges, catalog.Range{Range: catalog.NewRange(lo, lo+1), Shard: "s2", State: catalog.RangeServing, Epoch: 1})
	}
	last := ranges[len(ranges)-1].Range.Hi
	ranges = append(ranges, catalog.Range{Range: catalog.From(last), Shard: "s2", State: catalog.RangeServing, Epoch: 1})
	shards := make([]catalog.Shard, 0, len(st.Shards))
	for _, name := range []string{"s1", "s2"} {
		shards = append(shards, st.Shards[name])
	}
	if err := f.store.Init(ctx, st.Config, shards, ranges, true); err != nil {
		t.Fatal(err)
	}
}

// etcdClient is a client of store's etcd, closed at cleanup.
func etcdClient(t *testing.T, store *catalog.Store) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: store.Endpoints(), DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// countingStore is a store of the same catalog as store whose reads add the keys they
// return to keys.
func countingStore(t *testing.T, store *catalog.Store, keys *atomic.Int64) *catalog.Store {
	t.Helper()
	cli := etcdClient(t, store)
	cli.KV = countingKV{KV: cli.KV, keys: keys}
	s, err := catalog.NewStore(cli, "t")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type countingKV struct {
	clientv3.KV
	keys *atomic.Int64
}

func (c countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := c.KV.Get(ctx, key, opts...)
	if err == nil {
		c.keys.Add(int64(len(resp.Kvs)))
	}
	return resp, err
}

func (c countingKV) Txn(ctx context.Context) clientv3.Txn {
	return countingTxn{Txn: c.KV.Txn(ctx), keys: c.keys}
}

type countingTxn struct {
	clientv3.Txn
	keys *atomic.Int64
}

func (t countingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return countingTxn{Txn: t.Txn.If(cs...), keys: t.keys}
}

func (t countingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	return countingTxn{Txn: t.Txn.Then(ops...), keys: t.keys}
}

func (t countingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return countingTxn{Txn: t.Txn.Else(ops...), keys: t.keys}
}

func (t countingTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil {
		for _, r := range resp.Responses {
			if rr := r.GetResponseRange(); rr != nil {
				t.keys.Add(int64(len(rr.Kvs)))
			}
		}
	}
	return resp, err
}
