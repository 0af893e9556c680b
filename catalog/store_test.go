package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/internal/testenv"
)

func testStore(t *testing.T, opts ...Option) (*Store, *clientv3.Client) {
	t.Helper()
	return testStoreB(t, opts...)
}

func testStoreB(t testing.TB, opts ...Option) (*Store, *clientv3.Client) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	s, err := NewStore(cli, "demo", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, cli
}

func demoConfig() Config {
	return Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"tenants", "orders"}}
}

func demoShards(names ...string) []Shard {
	var out []Shard
	for _, n := range names {
		out = append(out, Shard{Name: n, DSN: "host=127.0.0.1 dbname=" + n})
	}
	return out
}

// initDemo writes a catalog with shards s1, s2, s3 and ranges :0 on s1, 0:1000 on s2, 1000: on s3.
func initDemo(t *testing.T, s *Store) *State {
	t.Helper()
	ctx := context.Background()
	ranges := []Range{{Range: Below(0), Shard: "s1"}, {Range: NewRange(0, 1000), Shard: "s2"}, {Range: From(1000), Shard: "s3"}}
	if err := s.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), ranges, false); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newMigration(t *testing.T, s *Store, id string, r Range, target string) *Migration {
	t.Helper()
	m := &Migration{ID: id, Kind: KindMove, Range: r.Range, Source: r.Shard, Target: target, Phase: PhaseCatchingUp}
	if err := s.PutMigration(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInitLoad(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	if _, err := s.Load(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load before init = %v, want ErrNotFound", err)
	}
	st := initDemo(t, s)
	if len(st.Ranges) != 3 || len(st.Shards) != 3 || st.Config.Key != "tenant_id" {
		t.Fatalf("loaded %+v", st)
	}
	for _, r := range st.Ranges {
		if r.State != RangeServing || r.Epoch != 1 {
			t.Errorf("range %s: state %s epoch %d", r.Range, r.State, r.Epoch)
		}
		if st.ModRev[RangeKey(r.Range.Lo)] == 0 {
			t.Errorf("no mod revision for %s", r.Range)
		}
	}
	// The documented keys hold JSON readable with etcdctl.
	resp, err := cli.Get(ctx, "/reshard/demo/ranges/"+KeyHex(0))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("range key: %v %v", resp, err)
	}
	var r map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil || r["shard"] != "s2" {
		t.Errorf("range value %s: %v", resp.Kvs[0].Value, err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s1"), nil, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second init = %v, want ErrExists", err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("a", "b"), nil, true); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	st, err = s.Load(ctx)
	if err != nil || len(st.Shards) != 2 || len(st.Ranges) != 2 || st.Ranges[0].Shard != "a" {
		t.Fatalf("after force: %+v %v", st, err)
	}
	if _, ok := st.Shards["s1"]; ok {
		t.Error("force init kept an old shard")
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 2 || h[0].Seq != 1 || h[1].Seq != 2 || !strings.Contains(h[1].Detail, "--force") {
		t.Errorf("history after force init: %+v %v", h, err)
	}
}

func TestInitRejectsBadInput(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		cfg    Config
		shards []Shard
		ranges []Range
		want   string
	}{
		{"overlap", demoConfig(), demoShards("s1", "s2"), []Range{{Range: Below(10), Shard: "s1"}, {Range: From(5), Shard: "s2"}}, "overlap"},
		{"gap", demoConfig(), demoShards("s1", "s2"), []Range{{Range: Below(10), Shard: "s1"}, {Range: From(20), Shard: "s2"}}, "gap between"},
		{"unknown shard", demoConfig(), demoShards("s1"), []Range{{Range: Full, Shard: "s9"}}, `unknown shard "s9"`},
		{"password", demoConfig(), []Shard{{Name: "s1", DSN: "host=h password=hunter2"}}, nil, "carries a password"},
		{"no shards", demoConfig(), nil, nil, "no shards"},
		{"dup shard", demoConfig(), demoShards("s1", "s1"), nil, "listed twice"},
		{"bad key", Config{Cluster: "demo", Key: "Tenant-ID", Tables: []string{"t"}}, demoShards("s1"), nil, "key column"},
		{"other cluster", Config{Cluster: "other", Key: "k", Tables: []string{"t"}}, demoShards("s1"), nil, "--cluster other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Init(ctx, tt.cfg, tt.shards, tt.ranges, false)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Init = %v, want ErrInvalid containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("password leaked: %v", err)
			}
			resp, err := cli.Get(ctx, "/reshard/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || resp.Count != 0 {
				t.Fatalf("bad init wrote %d keys (%v)", resp.Count, err)
			}
		})
	}
}

// Many writers race on one range from the same snapshot: exactly one wins.
func TestConcurrentWritersOneRange(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	ms := make([]*Migration, 8)
	for i := range ms {
		ms[i] = newMigration(t, s, fmt.Sprintf("m%d", i), st.Ranges[1], "s3")
	}
	st, _ = s.Load(ctx)
	for _, op := range []string{"freeze", "split"} {
		t.Run(op, func(t *testing.T) {
			base, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 8)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := base.Clone()
					m := *ms[i]
					<-start
					if op == "split" {
						errs[i] = s.Split(ctx, mine, 1000, int64(1100+i)) // the range 0:1000 is frozen by now
					} else {
						errs[i] = s.Freeze(ctx, mine, 0, &m)
					}
				}()
			}
			close(start)
			wg.Wait()
			wins := 0
			for i, err := range errs {
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrConflict):
				default:
					t.Errorf("writer %d: %v", i, err)
				}
			}
			if wins != 1 {
				t.Fatalf("%d writers won, want exactly 1 (%v)", wins, errs)
			}
			after, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateState(after); err != nil {
				t.Fatal(err)
			}
		})
	}
	_ = st
}

// Two drivers advancing the same journal from the same read: one wins.
func TestMigrationCAS(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
	if err := s.PutMigration(ctx, &Migration{ID: "mv1", Kind: KindMove, Range: m.Range, Phase: PhasePlanned}); !errors.Is(err, ErrExists) {
		t.Fatalf("create twice = %v, want ErrExists", err)
	}
	a, b := *m, *m
	a.AppliedLSN, b.AppliedLSN = "0/1", "0/2"
	if err := s.PutMigration(ctx, &a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMigration(ctx, &b); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale driver = %v, want ErrConflict", err)
	}
	got, err := s.GetMigration(ctx, "mv1")
	if err != nil || got.AppliedLSN != "0/1" || got.ModRev != a.ModRev {
		t.Fatalf("GetMigration = %+v, %v", got, err)
	}
	if _, err := s.GetMigration(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing migration: %v", err)
	}
	list, err := s.ListMigrations(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "mv1" {
		t.Errorf("ListMigrations = %+v, %v", list, err)
	}
}

func TestPhaseRules(t *testing.T) {
	tests := []struct {
		from, to string
		ok       bool
	}{
		{"", PhasePlanned, true},
		{PhasePlanned, PhaseCopying, true},
		{PhaseFrozen, PhaseCatchingUp, true}, // a retried cutover
		{PhaseCatchingUp, PhaseRolledBack, true},
		{PhaseFlipped, PhaseCleaningUp, true},
		{PhaseFlipped, PhaseRolledBack, false},
		{PhaseFlipped, PhaseFrozen, false},
		{PhaseDone, PhaseCopying, false},
		{PhaseDone, PhaseDone, false},
		{PhaseRolledBack, PhaseCopying, false},
		{PhaseCopying, "bogus", false},
	}
	for _, tt := range tests {
		if err := checkPhaseChange(tt.from, tt.to); (err == nil) != tt.ok {
			t.Errorf("%q -> %q: %v, want ok=%v", tt.from, tt.to, err, tt.ok)
		}
	}
}

func TestFreezeFlipUnfreeze(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
	if err := s.Flip(ctx, st, 0, m, "s3"); !errors.Is(err, ErrConflict) {
		t.Fatalf("flip of a serving range = %v, want ErrConflict", err)
	}
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatal(err)
	}
	if m.Phase != PhaseFrozen || st.Ranges[1].State != RangeFrozen || st.Ranges[1].Migration != "mv1" {
		t.Fatalf("after freeze: %+v %+v", m, st.Ranges[1])
	}
	if err := s.Split(ctx, st, 0, 10); !errors.Is(err, ErrConflict) {
		t.Fatalf("split of a frozen range = %v, want ErrConflict", err)
	}
	if err := s.Flip(ctx, st, 0, m, "s9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("flip to unknown shard = %v", err)
	}
	if err := s.Flip(ctx, st, 0, m, "s3"); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := loaded.Owner(500)
	if r.Shard != "s3" || r.State != RangeServing || r.Epoch != 2 {
		t.Fatalf("after flip: %+v", r)
	}
	if loaded.Migrations["mv1"].Phase != PhaseFlipped || m.Phase != PhaseFlipped {
		t.Fatalf("migration after flip: %+v", loaded.Migrations["mv1"])
	}
	if loaded.ModRev[RangeKey(0)] != st.ModRev[RangeKey(0)] || loaded.Revision != st.Revision {
		t.Errorf("State not updated in place: %d vs %d", loaded.ModRev[RangeKey(0)], st.ModRev[RangeKey(0)])
	}
	// Rollback path on another range.
	m2 := newMigration(t, s, "mv2", loaded.Ranges[2], "s1")
	if err := s.Freeze(ctx, loaded, 1000, m2); err != nil {
		t.Fatal(err)
	}
	m2.Phase = PhaseRolledBack
	if err := s.Unfreeze(ctx, loaded, 1000, m2); err != nil {
		t.Fatal(err)
	}
	if loaded.Ranges[2].State != RangeServing || loaded.Ranges[2].Epoch != 1 || loaded.Ranges[2].Shard != "s3" {
		t.Fatalf("after unfreeze: %+v", loaded.Ranges[2])
	}
}

// Every change is in the history, in commit order, with dense sequence numbers.
func TestHistoryRecordsEveryChange(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)                                                         // init
	if err := s.AddShard(ctx, Shard{Name: "s4", DSNEnv: "S4_DSN"}); err != nil { // shard_added
		t.Fatal(err)
	}
	st, _ = s.Load(ctx)
	if err := s.SetShardState(ctx, st, "s1", ShardDraining); err != nil { // shard_state
		t.Fatal(err)
	}
	if err := s.Split(ctx, st, 0, 500); err != nil { // split
		t.Fatal(err)
	}
	m := newMigration(t, s, "mv1", st.Ranges[2], "s4") // phase (created)
	if err := s.Freeze(ctx, st, 500, m); err != nil {  // range_state + phase
		t.Fatal(err)
	}
	if err := s.Flip(ctx, st, 500, m, "s4"); err != nil { // flip + phase
		t.Fatal(err)
	}
	m.Phase = PhaseDone
	if err := s.PutMigration(ctx, m); err != nil { // phase
		t.Fatal(err)
	}
	m.AppliedLSN = "0/99" // not a phase change: no event
	if err := s.PutMigration(ctx, m); err == nil {
		t.Fatal("a done migration changed")
	}
	h, err := s.History(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for i, ev := range h {
		if ev.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
		kinds = append(kinds, ev.Kind)
	}
	want := "init shard_added shard_state split phase range_state phase flip phase phase"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("history kinds:\n got %s\nwant %s", got, want)
	}
	last, _ := s.History(ctx, 2)
	if len(last) != 2 || last[1].Seq != int64(len(h)) || last[0].Seq != int64(len(h)-1) {
		t.Errorf("History(2) = %+v", last)
	}
	flip := h[7]
	if flip.From != "s2" || flip.To != "s4" || flip.Epoch != 3 || flip.Migration != "mv1" {
		t.Errorf("flip event %+v", flip)
	}
}

// Unrelated writers appending history concurrently all succeed (the counter retries
// internally) and seqs stay dense and unique.
func TestHistoryConcurrentAppends(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	initDemo(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.AddShard(ctx, Shard{Name: fmt.Sprintf("x%d", i), DSN: "host=h"})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 13 {
		t.Fatalf("history: %d events, %v", len(h), err)
	}
	for i, ev := range h {
		if ev.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
	}
	if err := s.AddShard(ctx, Shard{Name: "x1", DSN: "host=h"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate shard = %v, want ErrExists", err)
	}
}

// TestFreezeFlipUnderHistoryAppends: freeze and flip read the history counter together
// with the migration record, before their transaction; writers appending history
// meanwhile make that read stale, which must cost a retry, never a failure or a gap.
func TestFreezeFlipUnderHistoryAppends(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var added atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.AddShard(ctx, Shard{Name: fmt.Sprintf("w%d_%d", w, i), DSN: "host=h"}); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				added.Add(1)
			}
		}()
	}
	for added.Load() < 8 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	if err := s.Flip(ctx, st, 0, m, "s3"); err != nil {
		t.Fatalf("flip: %v", err)
	}
	close(stop)
	wg.Wait()
	h, err := s.History(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	flips := 0
	for i, ev := range h {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: the history has a gap or a duplicate", i, ev.Seq)
		}
		if ev.Kind == EventFlip {
			flips++
		}
	}
	if flips != 1 {
		t.Errorf("%d flip events, want 1", flips)
	}
}

// A concurrent reader never sees a gap or two owners while ranges are split and flipped.
func TestFlipSplitAtomicForReaders(t *testing.T) {
	s, _ := testStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := initDemo(t, s)
	var readers sync.WaitGroup
	var observed, bad int64
	var mu sync.Mutex
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ctx.Err() == nil {
				got, err := s.Load(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("reader: %v", err)
					}
					return
				}
				mu.Lock()
				observed++
				if err := ValidateState(got); err != nil {
					bad++
					t.Errorf("reader saw an invalid state at revision %d: %v", got.Revision, err)
				}
				mu.Unlock()
			}
		}()
	}
	shards := []string{"s1", "s2", "s3"}
	for i := range 30 {
		// Split the widest bounded range near its middle, then move the left half.
		r := st.Ranges[1+i%(len(st.Ranges)-2)]
		if r.Range.HiInf || r.Range.LoUnbounded() || r.Range.Hi-r.Range.Lo < 2 {
			continue
		}
		at := r.Range.Lo + (r.Range.Hi-r.Range.Lo)/2
		if err := s.Split(ctx, st, r.Range.Lo, at); err != nil {
			t.Fatal(err)
		}
		idx, _ := st.rangeIndex(r.Range.Lo)
		left := st.Ranges[idx]
		target := shards[(i+1)%3]
		if target == left.Shard {
			target = shards[(i+2)%3]
		}
		m := newMigration(t, s, fmt.Sprintf("m%d", i), left, target)
		if err := s.Freeze(ctx, st, left.Range.Lo, m); err != nil {
			t.Fatal(err)
		}
		if err := s.Flip(ctx, st, left.Range.Lo, m, target); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	readers.Wait()
	t.Logf("readers validated %d states (%d bad) while the writer made %d ranges", observed, bad, len(st.Ranges))
	if observed < 10 {
		t.Errorf("readers only saw %d states", observed)
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	st := initDemo(t, s)
	m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStats(ctx, &Stats{Shards: map[string]ShardStats{"s1": {Shard: "s1", Bytes: 10}},
		Ranges: []RangeStats{{Range: st.Ranges[0].Range, Shard: "s1", Bytes: 10}}, HotKeys: []HotKey{{Key: -5, Shard: "s1", Bytes: 10}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHotKeyCustom(ctx, 7, map[string]float64{"read_qps": 12}); err != nil {
		t.Fatal(err)
	}
	// The partition scheduler's last run is part of a backup too.
	leader, err := s.Campaign(ctx, "scheduler", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPartitionRun(ctx, leader, sampleRun("host pid 1", 2, 1)); err != nil {
		t.Fatal(err)
	}
	_ = leader.Resign(ctx)
	// A lock lives under the prefix too, and is not part of a backup.
	if _, err := cli.Put(ctx, "/reshard/demo/locks/migrations/mv1/abc", ""); err != nil {
		t.Fatal(err)
	}
	data, err := s.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "locks/") {
		t.Error("export holds a lock key")
	}
	if err := s.Import(ctx, data, false); !errors.Is(err, ErrExists) {
		t.Fatalf("import over a catalog without force = %v, want ErrExists", err)
	}
	before, _ := s.Load(ctx)
	statsBefore, _ := s.LoadStats(ctx)
	histBefore, _ := s.History(ctx, 0)

	// Restore into an empty etcd.
	s2, cli2 := testStore(t)
	if err := s2.Import(ctx, data, false); err != nil {
		t.Fatal(err)
	}
	after, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before.Revision, after.Revision = 0, 0
	if a, b := mustJSON(t, before), mustJSON(t, after); a != b {
		t.Errorf("state differs after round trip:\n%s\n%s", a, b)
	}
	statsAfter, _ := s2.LoadStats(ctx)
	statsBefore.Revision, statsAfter.Revision = 0, 0
	if a, b := mustJSON(t, statsBefore), mustJSON(t, statsAfter); a != b {
		t.Errorf("stats differ:\n%s\n%s", a, b)
	}
	runBefore, _ := s.LastPartitionRun(ctx)
	runAfter, err := s2.LastPartitionRun(ctx)
	if err != nil || runAfter == nil || mustJSON(t, runBefore) != mustJSON(t, runAfter) {
		t.Errorf("partition run after round trip = %v, %v; want %v", runAfter, err, runBefore)
	}
	histAfter, _ := s2.History(ctx, 0)
	if len(histAfter) != len(histBefore)+1 || histAfter[len(histAfter)-1].Kind != EventImport {
		t.Fatalf("history after import: %d events, want %d + import", len(histAfter), len(histBefore))
	}
	// The restored journal can be advanced: its revision is the new store's.
	after, _ = s2.Load(ctx)
	mm := after.Migrations["mv1"]
	if err := s2.Flip(ctx, after, 0, &mm, "s3"); err != nil {
		t.Fatalf("flip after import: %v", err)
	}
	// Export of the restored catalog, imported with --force over the original, gives it back.
	data2, err := s2.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, data2, true); err != nil {
		t.Fatal(err)
	}
	back, _ := s.Load(ctx)
	if r, _ := back.Owner(1); r.Shard != "s3" || r.Epoch != 2 {
		t.Errorf("forced import: %+v", r)
	}
	if resp, _ := cli.Get(ctx, "/reshard/demo/locks/", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 1 {
		t.Error("forced import removed a lock")
	}
	_ = cli2
}

func TestImportRejectsBadFiles(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	good := func() map[string]any {
		return map[string]any{
			"format": ExportFormat, "cluster": "demo", "revision": 1, "exported": time.Now(),
			"keys": map[string]any{
				"config":                          demoConfig(),
				"shards/s1":                       Shard{Name: "s1", DSN: "host=h", State: ShardActive},
				"ranges/" + KeyHex(math.MinInt64): Range{Range: Full, Shard: "s1", State: RangeServing, Epoch: 1},
			},
		}
	}
	mutate := map[string]func(map[string]any){
		"format":  func(m map[string]any) { m["format"] = "x" },
		"cluster": func(m map[string]any) { m["cluster"] = "other" },
		"gap":     func(m map[string]any) { delete(m["keys"].(map[string]any), "ranges/"+KeyHex(math.MinInt64)) },
		"bad key": func(m map[string]any) { m["keys"].(map[string]any)["bogus"] = 1 },
		"wrong range": func(m map[string]any) {
			m["keys"].(map[string]any)["ranges/"+KeyHex(5)] = Range{Range: Full, Shard: "s1"}
		},
		"no config": func(m map[string]any) { delete(m["keys"].(map[string]any), "config") },
	}
	for name, f := range mutate {
		t.Run(name, func(t *testing.T) {
			m := good()
			f(m)
			b, _ := json.Marshal(m)
			if err := s.Import(ctx, b, true); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Import = %v, want ErrInvalid", err)
			}
			resp, _ := cli.Get(ctx, "/reshard/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if resp.Count != 0 {
				t.Fatalf("a bad import wrote %d keys", resp.Count)
			}
		})
	}
	if err := s.Import(ctx, []byte("{not json"), true); !errors.Is(err, ErrInvalid) {
		t.Errorf("garbage: %v", err)
	}
	b, _ := json.Marshal(good())
	if err := s.Import(ctx, b, false); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

// A catalog bigger than one transaction is written in batches, config last.
func TestInitBatched(t *testing.T) {
	s, _ := testStore(t, WithMaxTxnOps(8))
	ctx := context.Background()
	var ranges []Range
	lo := int64(math.MinInt64)
	for i := range 30 {
		r := Range{Range: KeyRange{Lo: lo, Hi: int64(i * 10)}, Shard: "s1"}
		if i == 29 {
			r.Range = From(lo)
		}
		ranges = append(ranges, r)
		lo = int64(i * 10)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s1"), ranges, false); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil || len(st.Ranges) != 30 {
		t.Fatalf("Load: %d ranges, %v", len(st.Ranges), err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s2"), nil, true); err != nil {
		t.Fatal(err)
	}
	st, err = s.Load(ctx)
	if err != nil || len(st.Ranges) != 1 || len(st.Shards) != 1 {
		t.Fatalf("after forced batched init: %d ranges %d shards, %v", len(st.Ranges), len(st.Shards), err)
	}
	data, err := s.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, data, true); err != nil {
		t.Fatal(err)
	}
}

func TestStatsPutLoad(t *testing.T) {
	s, _ := testStore(t, WithMaxTxnOps(8))
	ctx := context.Background()
	st := initDemo(t, s)
	if err := s.PutHotKeyCustom(ctx, 42, map[string]float64{"read_qps": 100}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHotKeyCustom(ctx, 42, map[string]float64{"bad name": 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad metric = %v", err)
	}
	var hot []HotKey
	for i := range 20 {
		hot = append(hot, HotKey{Key: int64(i), Shard: "s2", Bytes: int64(100 - i)})
	}
	in := &Stats{Shards: map[string]ShardStats{"s1": {Shard: "s1", Bytes: 5}, "s2": {Shard: "s2", Bytes: 7}}, HotKeys: hot}
	for _, r := range st.Ranges {
		in.Ranges = append(in.Ranges, RangeStats{Range: r.Range, Shard: r.Shard, Rows: 3})
	}
	if err := s.PutStats(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Shards) != 2 || len(got.Ranges) != 3 || len(got.HotKeys) != 21 {
		t.Fatalf("LoadStats: %d shards %d ranges %d hot keys", len(got.Shards), len(got.Ranges), len(got.HotKeys))
	}
	// A new collection replaces measured hot keys but keeps the application's own.
	in.HotKeys = []HotKey{{Key: 42, Shard: "s2", Bytes: 1}}
	if err := s.PutStats(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadStats(ctx)
	if len(got.HotKeys) != 1 || got.HotKeys[0].Custom["read_qps"] != 100 || got.HotKeys[0].Bytes != 1 {
		t.Fatalf("hot keys after second put: %+v", got.HotKeys)
	}
}

func TestComputeStats(t *testing.T) {
	st := &State{Ranges: []Range{{Range: Below(100), Shard: "a"}, {Range: From(100), Shard: "b"}}}
	ms := []ShardMeasurement{
		{Shard: "a", SampleSeconds: 10, Tables: map[string]TableStats{"t": {Bytes: 1000, Rows: 10}},
			Tenants: map[int64]TenantLoad{1: {Bytes: 600, Rows: 6, Writes: 5}, 2: {Bytes: 300, Rows: 3, Writes: 500}, 150: {Bytes: 100, Rows: 1}}},
		{Shard: "b", SampleSeconds: 10, Tables: map[string]TableStats{"t": {Bytes: 50, Rows: 1}},
			Tenants: map[int64]TenantLoad{200: {Bytes: 50, Rows: 1, Writes: 10}}},
	}
	got := ComputeStats(st, ms, 1, []int64{200})
	if got.Shards["a"].Bytes != 1000 || got.Shards["b"].Rows != 1 {
		t.Errorf("shards %+v", got.Shards)
	}
	r0, r1 := got.Ranges[0], got.Ranges[1]
	if r0.Bytes != 900 || r0.Rows != 9 || r0.Keys != 2 || r0.WritesPerSec != 50.5 {
		t.Errorf("range a %+v (the leftover key 150 on a must not count)", r0)
	}
	if r1.Bytes != 50 || r1.WritesPerSec != 1 {
		t.Errorf("range b %+v", r1)
	}
	var keys []int64
	for _, h := range got.HotKeys {
		keys = append(keys, h.Key)
	}
	if fmt.Sprint(keys) != "[1 2 200]" {
		t.Errorf("hot keys %v, want top by bytes (1), top by writes (2) and the included 200", keys)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
