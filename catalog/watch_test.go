package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// The watched copy follows splits and flips, and no published snapshot is ever invalid.
func TestCacheFollowsAndStaysValid(t *testing.T) {
	s, _ := testStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := initDemo(t, s)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]bool{}
	published, lastPublished := 0, st.Revision
	// Every state the cache publishes, in order: valid, and revisions only go forward.
	c := s.watchFrom(ctx, st.Clone(), func(p *State) {
		published++
		if err := ValidateRanges(p.Ranges, p.Shards); err != nil {
			t.Errorf("cache published an invalid state at revision %d: %v", p.Revision, err)
		}
		if p.Revision < lastPublished {
			t.Errorf("revision went back from %d to %d", lastPublished, p.Revision)
		}
		lastPublished = p.Revision
	})
	defer c.Close()
	// One observer waits for every publication and validates it; another polls.
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			ch := c.Changed()
			cur := c.State()
			if err := ValidateRanges(cur.Ranges, cur.Shards); err != nil {
				t.Errorf("watcher published an invalid state at revision %d: %v", cur.Revision, err)
			}
			mu.Lock()
			seen[cur.Revision] = true
			mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		res := NewResolver(c)
		for ctx.Err() == nil {
			for _, k := range []int64{-5, 0, 1, 499, 500, 999, 1000, 1 << 40} {
				if _, err := res.Resolve(k); err != nil {
					t.Errorf("resolve %d: %v", k, err)
				}
			}
		}
	}()

	var lastRev int64
	for i := range 20 {
		r := st.Ranges[1]
		at := r.Range.Lo + (r.Range.Hi-r.Range.Lo)/2
		if r.Range.Hi-r.Range.Lo < 2 {
			break
		}
		if err := s.Split(ctx, st, r.Range.Lo, at); err != nil {
			t.Fatal(err)
		}
		left := st.Ranges[1]
		target := map[string]string{"s1": "s2", "s2": "s3", "s3": "s1"}[left.Shard]
		m := newMigration(t, s, fmt.Sprintf("m%d", i), left, target)
		if err := s.Freeze(ctx, st, left.Range.Lo, m); err != nil {
			t.Fatal(err)
		}
		if err := s.Flip(ctx, st, left.Range.Lo, m, target); err != nil {
			t.Fatal(err)
		}
		lastRev = st.Revision
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	got, err := c.WaitRevision(wctx, lastRev)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, got.Ranges), mustJSON(t, loaded.Ranges); a != b {
		t.Errorf("cache ranges differ from Load:\n%s\n%s", a, b)
	}
	if a, b := mustJSON(t, got.Migrations), mustJSON(t, loaded.Migrations); a != b {
		t.Errorf("cache migrations differ from Load")
	}
	for k, v := range loaded.ModRev {
		if got.ModRev[k] != v {
			t.Errorf("ModRev[%s] = %d, want %d", k, got.ModRev[k], v)
		}
	}
	// A write can be made from the cached state.
	mine := got.Clone()
	if err := s.SetShardState(ctx, mine, "s1", ShardDraining); err != nil {
		t.Fatalf("write from cached state: %v", err)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	t.Logf("cache published %d states, all valid; a concurrent observer sampled %d of them", published, len(seen))
	mu.Unlock()
}

// A router holds a write while the range is frozen and gets the new owner after the flip.
func TestResolverWaitServing(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	c, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := NewResolver(c)
	rt, err := res.Resolve(500)
	if err != nil || rt.Shard != "s2" || rt.State != RangeServing || rt.Epoch != 1 || !rt.Range.Equal(NewRange(0, 1000)) {
		t.Fatalf("Resolve(500) = %+v, %v", rt, err)
	}
	m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRevision(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	if rt, _ := res.Resolve(500); rt.State != RangeFrozen {
		t.Fatalf("after freeze: %+v", rt)
	}
	type result struct {
		rt  Route
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		rt, err := res.WaitServing(ctx, 500)
		done <- result{rt, err, time.Now()}
	}()
	// Still frozen: the write must be held.
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := res.WaitServing(tctx, 999); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitServing on a frozen range = %v, want deadline exceeded", err)
	}
	cancel()
	time.Sleep(200 * time.Millisecond)
	flipped := time.Now()
	if err := s.Flip(ctx, st, 0, m, "s3"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.rt.Shard != "s3" || r.rt.Epoch != 2 || r.rt.State != RangeServing {
			t.Fatalf("WaitServing = %+v, %v", r.rt, r.err)
		}
		if r.at.Before(flipped) {
			t.Fatal("WaitServing returned before the flip")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitServing did not return after the flip")
	}
	if _, err := res.WaitServing(ctx, 5000); err != nil {
		t.Errorf("serving range: %v", err)
	}
}

// A watch that starts behind a compaction starts again from a fresh Load.
func TestCacheRestartsAfterCompaction(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	stale := initDemo(t, s)
	st := stale.Clone()
	if err := s.Split(ctx, st, 1000, 2000); err != nil {
		t.Fatal(err)
	}
	if err := s.SetShardState(ctx, st, "s3", ShardDraining); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	c := s.watchFrom(ctx, stale, nil)
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := c.WaitRevision(wctx, st.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Ranges) != 4 || got.Shards["s3"].State != ShardDraining {
		t.Fatalf("after restart: %d ranges, s3 %s", len(got.Ranges), got.Shards["s3"].State)
	}
	if c.reloads.Load() == 0 {
		t.Error("the cache did not reload")
	}
	// And it keeps following afterwards.
	if err := s.Split(ctx, st, 2000, 3000); err != nil {
		t.Fatal(err)
	}
	if got, err = c.WaitRevision(wctx, st.Revision); err != nil || len(got.Ranges) != 5 {
		t.Fatalf("after restart and split: %d ranges, %v", len(got.Ranges), err)
	}
}

func TestSetRange(t *testing.T) {
	mk := func(los ...int64) []Range {
		var rs []Range
		for _, lo := range los {
			rs = append(rs, Range{Range: KeyRange{Lo: lo, HiInf: true}})
		}
		return rs
	}
	los := func(rs []Range) string {
		b, _ := json.Marshal(rs)
		var out []int64
		for _, r := range rs {
			out = append(out, r.Range.Lo)
		}
		_ = b
		return fmt.Sprint(out)
	}
	tests := []struct {
		in   []Range
		lo   int64
		del  bool
		want string
	}{
		{mk(1, 5), 3, false, "[1 3 5]"},
		{mk(1, 5), 0, false, "[0 1 5]"},
		{mk(1, 5), 9, false, "[1 5 9]"},
		{mk(1, 5), 5, false, "[1 5]"},
		{mk(1, 5), 5, true, "[1]"},
		{mk(1, 5), 4, true, "[1 5]"},
	}
	for _, tt := range tests {
		got := setRange(tt.in, tt.lo, Range{Range: KeyRange{Lo: tt.lo, HiInf: true}}, tt.del)
		if los(got) != tt.want {
			t.Errorf("setRange(%d, del=%v) = %s, want %s", tt.lo, tt.del, los(got), tt.want)
		}
	}
}

// TestStaticCacheNeverChanges: a static cache serves its state, holds a write to a frozen
// range until the caller gives up, and its Close ends a wait as a stopped watch does.
func TestStaticCacheNeverChanges(t *testing.T) {
	st := &State{Revision: 3, Ranges: []Range{
		{Range: Below(0), Shard: "s1", State: RangeServing, Epoch: 1},
		{Range: From(0), Shard: "s2", State: RangeFrozen, Epoch: 2},
	}}
	c := NewStaticCache(st)
	res := NewResolver(c)
	if rt, err := res.Resolve(-5); err != nil || rt.Shard != "s1" || rt.Revision != 3 {
		t.Fatalf("Resolve(-5) = %+v, %v", rt, err)
	}
	if got, err := c.WaitRevision(context.Background(), 3); err != nil || got != st {
		t.Fatalf("WaitRevision(3) = %v, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := res.WaitServing(ctx, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitServing on a frozen range = %v, want deadline exceeded", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := res.WaitServing(context.Background(), 5)
		done <- err
	}()
	c.Close()
	c.Close() // idempotent, like a watch's
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "catalog watch stopped") {
			t.Errorf("WaitServing after Close = %v, want the watch stopped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end WaitServing")
	}
	if c.Err() != nil || c.State() != st {
		t.Errorf("after Close: Err %v, state %p (want %p)", c.Err(), c.State(), st)
	}
}

// TestCacheFollowsFlipsWithoutCopyingTheCatalog: a cache over a big catalog follows a flip
// at a cost that does not grow with the catalog: it neither copies every range nor every
// mod revision per watch response. Here the cache starts from a state of 300,000 ranges
// (only the three of initDemo are in etcd: the flips touch those) and follows 20 flips;
// what it allocates per flip must stay far below one copy of the ranges (about 30 MB).
func TestCacheFollowsFlipsWithoutCopyingTheCatalog(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	big := bigState(st, 300_000)
	if err := ValidateRanges(big.Ranges, big.Shards); err != nil {
		t.Fatal(err)
	}
	c := s.watchFrom(ctx, big, nil)
	defer c.Close()
	res := NewResolver(c)
	wait := func(rev int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			rt, err := res.Resolve(500)
			if err != nil {
				t.Fatal(err)
			}
			if rt.Revision >= rev {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("cache still at revision %d after a minute, want %d", rt.Revision, rev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(st.Revision)
	const flips = 20
	perFlip := allocatedPerFlip(t, s, st, flips, flipChecks{flipped: func(int, *Migration, string) { wait(st.Revision) }})
	if rt, _ := res.Resolve(500); rt.Epoch != flips+1 {
		t.Fatalf("the cache did not follow the flips: %+v", rt)
	}
	t.Logf("%d KiB allocated per flip (etcd, client and cache) over %d ranges", perFlip>>10, len(big.Ranges))
	if perFlip > 8<<20 {
		t.Fatalf("%d MiB allocated per flip followed: the cache copies the catalog on every change", perFlip>>20)
	}
}

// bigState is st (initDemo's) with its last range, [1000, inf) on s3, cut into n ranges of
// ten keys and the rest, all on s3 and at that range's mod revision.
func bigState(st *State, n int) *State {
	big := st.Clone()
	rev := st.ModRev[RangeKey(1000)]
	big.Ranges = append(make([]Range, 0, n+3), st.Ranges[:2]...)
	for i := range n {
		lo := int64(1000 + i*10)
		big.Ranges = append(big.Ranges, Range{Range: NewRange(lo, lo+10), Shard: "s3", State: RangeServing, Epoch: 1})
		big.ModRev[RangeKey(lo)] = rev
	}
	last := int64(1000 + n*10)
	big.Ranges = append(big.Ranges, Range{Range: From(last), Shard: "s3", State: RangeServing, Epoch: 1})
	big.ModRev[RangeKey(last)] = rev
	return big
}

// TestCacheFirstSyncReadsInPages: a cache over 10,000 ranges starts from paged reads at one
// revision (no reply over a page), resolves every range, and its State is Load's, before
// and after it follows a split and a flip.
func TestCacheFirstSyncReadsInPages(t *testing.T) {
	const n, page = 10_000, 1000
	base, cli := testStore(t)
	ctx := context.Background()
	if err := base.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), manyRanges(n), false); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(cli, "demo", WithPageSize(page))
	if err != nil {
		t.Fatal(err)
	}
	pk := &pageKV{KV: cli.KV}
	s.kv = pk
	c, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if pk.maxKVs > page || pk.gets < n/page-1 {
		t.Fatalf("first sync: %d reads after the first, one of %d keys (page %d)", pk.gets, pk.maxKVs, page)
	}
	sameAsLoad(t, base, c, NewResolver(c))
	st, err := base.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := st.Ranges[n/2]
	if err := base.Split(ctx, st, r.Range.Lo, r.Range.Lo+(r.Range.Hi-r.Range.Lo)/2); err != nil {
		t.Fatal(err)
	}
	to := map[string]string{"s1": "s2", "s2": "s3", "s3": "s1"}[r.Shard]
	m := newMigration(t, base, "m1", st.Ranges[n/2], to)
	if err := base.Freeze(ctx, st, r.Range.Lo, m); err != nil {
		t.Fatal(err)
	}
	if err := base.Flip(ctx, st, r.Range.Lo, m, to); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitRevision(wctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	sameAsLoad(t, base, c, NewResolver(c))
}

// sameAsLoad: the cache's State is what Load reads now, and the resolver routes the first
// and last key of every range to it.
func sameAsLoad(t *testing.T, s *Store, c *Cache, res *Resolver) {
	t.Helper()
	want, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := c.State()
	if got.Revision != want.Revision {
		t.Fatalf("cache at revision %d, Load at %d", got.Revision, want.Revision)
	}
	for _, part := range []struct{ a, b any }{{got.Ranges, want.Ranges}, {got.Shards, want.Shards}, {got.Migrations, want.Migrations}, {got.ModRev, want.ModRev}, {got.Config, want.Config}} {
		if a, b := mustJSON(t, part.a), mustJSON(t, part.b); a != b {
			t.Fatalf("cache differs from Load:\n%.300s\n%.300s", a, b)
		}
	}
	for _, r := range want.Ranges {
		last := r.Range.Hi - 1
		if r.Range.HiInf {
			last = math.MaxInt64
		}
		for _, k := range []int64{r.Range.Lo, last} {
			rt, err := res.Resolve(k)
			if err != nil || rt.Range != r.Range || rt.Shard != r.Shard || rt.Epoch != r.Epoch || rt.State != r.State {
				t.Fatalf("resolve %d: %+v %v, want %+v", k, rt, err, r)
			}
		}
	}
}

// TestResolveKeyTakesKeysInTheirOwnType: under hash distribution a uuid or text key is
// resolved by its PostgreSQL hash, under range an integer key by itself; a key of another
// type than the keyspace's is ErrBadKey.
func TestResolveKeyTakesKeysInTheirOwnType(t *testing.T) {
	u, _ := ParseKey(KeyUUID, "0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d")
	ranges := []Range{{Range: Below(0), Shard: "neg", State: RangeServing, Epoch: 1}, {Range: From(0), Shard: "pos", State: RangeServing, Epoch: 2}}
	side := func(h int64) string {
		if h < 0 {
			return "neg"
		}
		return "pos"
	}
	tests := []struct {
		cfg     Config
		key     Key
		want    string
		wantErr bool
	}{
		{Config{KeyType: KeyUUID, Distribution: DistHash}, u, side(HashUUID([16]byte(u.u))), false},
		{Config{KeyType: KeyText, Distribution: DistHash}, TextKey("acme"), side(HashText("acme")), false},
		{Config{KeyType: KeyText, Distribution: DistHash}, TextKey("globex"), side(HashText("globex")), false},
		{Config{Distribution: DistHash}, BigintKey(-7), side(HashBigint(-7)), false},
		{Config{}, BigintKey(-7), "neg", false},
		{Config{}, BigintKey(7), "pos", false},
		{Config{KeyType: KeyUUID, Distribution: DistHash}, TextKey("acme"), "", true},
	}
	for _, tt := range tests {
		c := NewStaticCache(&State{Config: tt.cfg, Ranges: ranges})
		rt, err := NewResolver(c).ResolveKey(tt.key)
		if (err != nil) != tt.wantErr || rt.Shard != tt.want {
			t.Errorf("%+v ResolveKey(%s) = %+v, %v; want shard %q", tt.cfg, tt.key, rt, err, tt.want)
		}
		c.Close()
	}
}
