package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// pageKV is a real etcd KV that records the most keys one reply carried, and runs
// beforeGet ahead of every Get (the reads after a load's first transaction).
type pageKV struct {
	clientv3.KV
	mu        sync.Mutex
	maxKVs    int
	gets      int
	beforeGet func()
}

func (p *pageKV) saw(n int) {
	p.mu.Lock()
	p.maxKVs = max(p.maxKVs, n)
	p.mu.Unlock()
}

func (p *pageKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	p.mu.Lock()
	p.gets++
	before := p.beforeGet
	p.mu.Unlock()
	if before != nil {
		before()
	}
	resp, err := p.KV.Get(ctx, key, opts...)
	if err == nil {
		p.saw(len(resp.Kvs))
	}
	return resp, err
}

func (p *pageKV) Txn(ctx context.Context) clientv3.Txn { return &pageTxn{Txn: p.KV.Txn(ctx), p: p} }

type pageTxn struct {
	clientv3.Txn
	p *pageKV
}

func (t *pageTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *pageTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *pageTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t *pageTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil {
		for _, r := range resp.Responses {
			if rr := r.GetResponseRange(); rr != nil {
				t.p.saw(len(rr.Kvs))
			}
		}
	}
	return resp, err
}

// TestLoadReadsABigCatalogInPagesAtOneRevision: Load of 10,000 ranges never asks etcd for
// more than a page of keys in one reply, gets every range with its mod revision, and is one
// snapshot: a split committed between two of its pages is not in what it returns.
func TestLoadReadsABigCatalogInPagesAtOneRevision(t *testing.T) {
	const n = 10_000
	base, cli := testStore(t)
	ctx := context.Background()
	want := manyRanges(n)
	if err := base.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), want, false); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		want[i].State, want[i].Epoch = RangeServing, 1
	}
	for _, tc := range []struct {
		page      int
		wantGets  int // at least: the reads after the first transaction
		splitMid  bool
		wantFinal int
	}{
		{page: n + 10, wantGets: 0, wantFinal: n},
		{page: n, wantGets: 0, wantFinal: n}, // exactly a page: etcd says no more
		{page: 999, wantGets: n / 999, wantFinal: n},
		{page: 1000, wantGets: 9, splitMid: true, wantFinal: n + 1},
	} {
		t.Run(fmt.Sprintf("page%d", tc.page), func(t *testing.T) {
			s, err := NewStore(cli, "demo", WithPageSize(tc.page))
			if err != nil {
				t.Fatal(err)
			}
			pk := &pageKV{KV: cli.KV}
			s.kv = pk
			var splitRev int64
			if tc.splitMid {
				var once sync.Once
				pk.beforeGet = func() { once.Do(func() { splitRev = splitFirst(t, base) }) }
			}
			st, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkLoaded(t, base, st, want)
			if pk.maxKVs > tc.page {
				t.Errorf("one reply carried %d keys, more than a page of %d", pk.maxKVs, tc.page)
			}
			if pk.gets < tc.wantGets {
				t.Errorf("%d reads after the first, want at least %d", pk.gets, tc.wantGets)
			}
			if tc.splitMid && (splitRev == 0 || st.Revision >= splitRev) {
				t.Errorf("split at revision %d, load at %d: the split did not land between pages", splitRev, st.Revision)
			}
			if now, err := base.Load(ctx); err != nil || len(now.Ranges) != tc.wantFinal {
				t.Fatalf("after: %d ranges (%v), want %d", len(now.Ranges), err, tc.wantFinal)
			}
		})
	}
}

// splitFirst splits the first range in two and returns the split's revision.
func splitFirst(t *testing.T, s *Store) int64 {
	t.Helper()
	st, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := st.Ranges[0].Range
	if err := s.Split(context.Background(), st, r.Lo, r.Lo+(r.Hi-r.Lo)/2); err != nil {
		t.Fatal(err)
	}
	return st.Revision
}

// checkLoaded: st holds exactly want (in order) with each range key's mod revision, the
// three shards and the config.
func checkLoaded(t *testing.T, s *Store, st *State, want []Range) {
	t.Helper()
	if len(st.Ranges) != len(want) {
		t.Fatalf("loaded %d ranges, want %d", len(st.Ranges), len(want))
	}
	for i, r := range st.Ranges {
		if r != want[i] {
			t.Fatalf("range %d: got %+v, want %+v", i, r, want[i])
		}
		if rev := st.ModRev[RangeKey(r.Range.Lo)]; rev == 0 || rev > st.Revision {
			t.Fatalf("range %s: mod revision %d (state at %d)", r.Range, rev, st.Revision)
		}
	}
	if err := ValidateRanges(st.Ranges, st.Shards); err != nil {
		t.Fatal(err)
	}
	if len(st.Shards) != 3 || st.Config.Key != "tenant_id" || st.ModRev[keyConfig] == 0 {
		t.Fatalf("shards %v, config %+v", st.Shards, st.Config)
	}
	if len(st.ModRev) != len(want)+3+1 {
		t.Fatalf("%d mod revisions, want %d (ranges, shards, config)", len(st.ModRev), len(want)+4)
	}
}

// TestLoadRangeIsEnoughForAFreezeAndAFlip: LoadRange reads the config, the one range and
// the named shards, at the revisions Load sees, and nothing else; a freeze and a flip on
// it work as on a full State and compare the same revisions: the range written by anyone
// else after the freeze fails the flip. A range that does not start at lo, or a shard not
// named, is not in it.
func TestLoadRangeIsEnoughForAFreezeAndAFlip(t *testing.T) {
	for _, touched := range []bool{false, true} {
		ctx := context.Background()
		s, cli, full, m := demoMove(t)
		st, err := s.LoadRange(ctx, 0, "s2", "s3", "nope")
		if err != nil {
			t.Fatal(err)
		}
		rk := RangeKey(0)
		if len(st.Ranges) != 1 || st.Ranges[0] != full.Ranges[1] || st.ModRev[rk] != full.ModRev[rk] ||
			len(st.Shards) != 2 || st.Shards["s3"] != full.Shards["s3"] || st.Config.Key != "tenant_id" || st.Migrations != nil {
			t.Fatalf("LoadRange(0, s2, s3, nope) = %+v; want range %+v at revision %d, shards s2 and s3, the config", st, full.Ranges[1], full.ModRev[rk])
		}
		if none, err := s.LoadRange(ctx, 5); err != nil || len(none.Ranges) != 0 {
			t.Errorf("LoadRange(5) = %+v, %v; want no range (none starts at 5)", none, err)
		}
		if err := s.Freeze(ctx, st, 0, m); err != nil {
			t.Fatal(err)
		}
		if touched { // the same value written again: only its revision moves
			resp, err := cli.Get(ctx, s.key(rk))
			if err == nil {
				_, err = cli.Put(ctx, s.key(rk), string(resp.Kvs[0].Value))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		err = s.Flip(ctx, st, 0, m, "s3")
		switch {
		case touched && !errors.Is(err, ErrConflict):
			t.Errorf("flip after the range was written since the freeze = %v; want ErrConflict", err)
		case !touched && err != nil:
			t.Errorf("flip on the state LoadRange read and the freeze moved: %v", err)
		}
	}
}
