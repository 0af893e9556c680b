package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/internal/testenv"
)

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
		{"bad key", Config{Cluster: "demo", Key: strings.Repeat("k", 64), Tables: []string{"t"}}, demoShards("s1"), nil, "key column"},
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
			loadValid(t, ctx, s)
		})
	}
	_ = st
}

// Two drivers advancing the same journal from the same read: one wins.
func TestMigrationCAS(t *testing.T) {
	s, _, _, m := demoMove(t)
	ctx := context.Background()
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
	s, _, st, m := demoMove(t)
	ctx := context.Background()
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

// TestFreezeFlipUnderHistoryAppends: freeze and flip read the history counter together
// with the migration record, before their transaction; writers appending history
// meanwhile make that read stale, which must cost a retry, never a failure or a gap.
func TestFreezeFlipUnderHistoryAppends(t *testing.T) {
	s, _, st, m := demoMove(t)
	ctx := context.Background()
	var added atomic.Int64
	stop := testenv.Repeat(4, func(w, i int) bool {
		if err := s.AddShard(ctx, Shard{Name: fmt.Sprintf("w%d_%d", w, i), DSN: "host=h"}); err != nil {
			t.Errorf("writer %d: %v", w, err)
			return false
		}
		added.Add(1)
		return true
	})
	for added.Load() < 8 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatalf("freeze: %v", err)
	}
	if err := s.Flip(ctx, st, 0, m, "s3"); err != nil {
		t.Fatalf("flip: %v", err)
	}
	stop()
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

// TestFreezeAndFlipDoNotCopyTheCatalog: a cutover's two catalog writes cost the same over
// 300,000 ranges as over three: they check the range they change, not a copy of every
// range, and update the caller's State in place. What 10 freezes and flips allocate (etcd's
// share included) must stay far below one copy of the ranges (about 24 MB).
func TestFreezeAndFlipDoNotCopyTheCatalog(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	st := bigState(initDemo(t, s), 300_000)
	const flips = 10
	perPair := allocatedPerFlip(t, s, st, flips, flipChecks{
		frozen: func(_ int, m *Migration, _ string) {
			if got := st.Ranges[1]; got.State != RangeFrozen || got.Migration != m.ID {
				t.Fatalf("after freeze the state holds %+v", got)
			}
		},
		flipped: func(i int, _ *Migration, to string) {
			if got := st.Ranges[1]; got.Shard != to || got.State != RangeServing || got.Epoch != int64(i+2) {
				t.Fatalf("after flip %d the state holds %+v", i, got)
			}
		},
	})
	t.Logf("%d KiB allocated per freeze and flip over %d ranges", perPair>>10, len(st.Ranges))
	if perPair > 4<<20 {
		t.Fatalf("%d MiB allocated per freeze and flip: they copy the catalog", perPair>>20)
	}
	loaded, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := mustJSON(t, loaded.Ranges[1]), mustJSON(t, st.Ranges[1]); a != b {
		t.Fatalf("etcd holds %s, the state %s", a, b)
	}
	// A write that would change bounds or name an unknown shard is refused in place too.
	for _, nr := range []Range{{Range: NewRange(0, 999), Shard: "s1", State: RangeServing}, {Range: NewRange(0, 1000), Shard: "nope", State: RangeServing}} {
		if err := validateInPlace(st.Ranges[1], nr, st.Shards); !errors.Is(err, ErrInvalid) {
			t.Errorf("validateInPlace(%+v) = %v, want ErrInvalid", nr, err)
		}
	}
}
