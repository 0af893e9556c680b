package planner

import (
	"bytes"
	"errors"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

func TestCompute(t *testing.T) {
	three := map[string]string{"s1": "", "s2": "", "s3": ""}
	// Four shards with every byte on s1 in eight equal ranges: where the caps bite.
	four := map[string]string{"s1": "", "s2": "", "s3": "", "s4": ""}
	allOnS1 := []rng{
		{":100", "s1", 100, 0}, {"100:200", "s1", 100, 0}, {"200:300", "s1", 100, 0}, {"300:400", "s1", 100, 0},
		{"400:500", "s1", 100, 0}, {"500:600", "s1", 100, 0}, {"600:700", "s1", 100, 0}, {"700:", "s1", 100, 0},
	}
	tests := []struct {
		name   string
		shards map[string]string
		ranges []rng
		hots   []hot
		opts   func(*Options)
		state  func(*catalog.State)
		check  func(t *testing.T, p *Plan)
	}{
		{
			name:   "balanced catalog: nothing to do",
			shards: three,
			ranges: []rng{{":1000", "s1", 100, 1}, {"1000:2000", "s2", 104, 1}, {"2000:", "s3", 96, 1}},
			check: func(t *testing.T, p *Plan) {
				if !p.Empty() || !p.Balanced {
					t.Fatalf("want an empty, balanced plan, got:\n%s", describe(p))
				}
				if txt := p.Text(); !strings.Contains(txt, "nothing to do: every shard is within 10% of the mean") {
					t.Fatalf("text does not say there is nothing to do:\n%s", txt)
				}
			},
		},
		{
			name:   "within the threshold: no move",
			shards: map[string]string{"s1": "", "s2": ""},
			ranges: []rng{{":1000", "s1", 108, 0}, {"1000:", "s2", 92, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize },
			check: func(t *testing.T, p *Plan) {
				if !p.Empty() {
					t.Fatalf("shards at 1.08 and 0.92 are within 10%%, want no step:\n%s", describe(p))
				}
			},
		},
		{
			name:   "skewed sizes: moves from the big shard",
			shards: three,
			ranges: []rng{
				{":100", "s1", 100, 0}, {"100:200", "s1", 100, 0}, {"200:300", "s1", 100, 0}, {"300:400", "s1", 100, 0},
				{"400:500", "s1", 100, 0}, {"500:600", "s2", 100, 0}, {"600:700", "s3", 100, 0}, {"700:", "s3", 0, 0},
			},
			opts: func(o *Options) { o.Strategy = StrategySize },
			check: func(t *testing.T, p *Plan) {
				if p.Moves == 0 {
					t.Fatalf("want moves off s1:\n%s", describe(p))
				}
				for _, s := range p.Steps {
					if s.Kind == StepMove && s.From != "s1" {
						t.Errorf("step %d moves from %s, want only from s1", s.N, s.From)
					}
				}
				if p.MaxMeanAfter > 1.1+1e-6 || p.MaxMeanAfter >= p.MaxMeanBefore {
					t.Fatalf("max/mean %.3f -> %.3f, want within 10%%:\n%s", p.MaxMeanBefore, p.MaxMeanAfter, describe(p))
				}
				// 700 bytes over 3 shards: whole ranges of 100 cannot do better than 300/233.
				if p.Splits != 0 && p.BytesToMove > 300 {
					t.Errorf("moved %d bytes, more than needed", p.BytesToMove)
				}
			},
		},
		{
			name:   "one hot tenant gets its own range",
			shards: three,
			ranges: []rng{{":1000", "s1", 3000, 30}, {"1000:2000", "s2", 500, 5}, {"2000:", "s3", 500, 5}},
			hots:   []hot{{42, 1200, 12}, {7, 10, 0}, {900, 10, 0}},
			check: func(t *testing.T, p *Plan) {
				var iso *Step
				for i := range p.Steps {
					if s := &p.Steps[i]; s.Kind == StepSplit && s.Isolate != nil && *s.Isolate == 42 {
						iso = s
					}
				}
				if iso == nil {
					t.Fatalf("want a split isolating tenant 42:\n%s", describe(p))
				}
				if len(iso.At) != 2 || iso.At[0] != 42 || iso.At[1] != 43 || !strings.Contains(iso.Reason, "tenant 42") {
					t.Fatalf("isolation step %+v", *iso)
				}
				if p.MaxMeanAfter > 1.1 {
					t.Fatalf("max/mean %.3f -> %.3f, want within 10%%:\n%s", p.MaxMeanBefore, p.MaxMeanAfter, describe(p))
				}
			},
		},
		{
			name:   "a tenant bigger than a shard sets the lower bound",
			shards: three,
			ranges: []rng{{":1000", "s1", 3000, 0}, {"1000:2000", "s2", 100, 0}, {"2000:", "s3", 100, 0}},
			hots:   []hot{{500, 2000, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize },
			check: func(t *testing.T, p *Plan) {
				// total 3200 over 3 shards: mean 1066.7; tenant 500 alone is 1.875x.
				if math.Abs(p.LowerBound-1.875) > 1e-3 {
					t.Fatalf("lower bound %.4f, want 1.875", p.LowerBound)
				}
				if p.MaxMeanAfter < p.LowerBound-1e-6 {
					t.Fatalf("max/mean after %.4f below the lower bound %.4f", p.MaxMeanAfter, p.LowerBound)
				}
				if p.MaxMeanAfter > p.LowerBound+0.01 {
					t.Fatalf("max/mean after %.4f, want the bound %.4f (everything but the tenant can leave s1):\n%s", p.MaxMeanAfter, p.LowerBound, describe(p))
				}
			},
		},
		{
			name:   "an empty new shard gets load",
			shards: map[string]string{"s1": "", "s2": "", "s3": "", "s4": ""},
			ranges: []rng{
				{":100", "s1", 100, 1}, {"100:200", "s1", 100, 1}, {"200:300", "s1", 100, 1},
				{"300:400", "s2", 100, 1}, {"400:500", "s2", 100, 1}, {"500:600", "s2", 100, 1},
				{"600:700", "s3", 100, 1}, {"700:800", "s3", 100, 1}, {"800:", "s3", 100, 1},
			},
			check: func(t *testing.T, p *Plan) {
				s4 := shardLoad(p, "s4")
				if s4.Load != 0 || s4.LoadAfter < 0.9 || s4.RangesAfter == 0 {
					t.Fatalf("s4 %+v, want it near the mean after:\n%s", s4, describe(p))
				}
				if p.MaxMeanAfter > 1.1+1e-6 {
					t.Fatalf("max/mean after %.3f", p.MaxMeanAfter)
				}
			},
		},
		{
			name:   "a draining shard is emptied",
			shards: map[string]string{"s1": "", "s2": "", "s3": catalog.ShardDraining},
			ranges: []rng{
				{":100", "s1", 100, 1}, {"100:200", "s2", 100, 1}, {"200:300", "s3", 100, 1},
				{"300:400", "s3", 50, 1}, {"400:", "s3", 0, 0},
			},
			check: func(t *testing.T, p *Plan) {
				s3 := shardLoad(p, "s3")
				if s3.RangesAfter != 0 || s3.LoadAfter != 0 || s3.BytesAfter != 0 {
					t.Fatalf("s3 after %+v, want empty:\n%s", s3, describe(p))
				}
				drains := 0
				for _, s := range p.Steps {
					if s.Kind == StepMove && s.From == "s3" {
						drains++
						if !s.Drain || !strings.Contains(s.Reason, "draining") {
							t.Errorf("step %d: %+v", s.N, s)
						}
					}
				}
				if drains != 3 {
					t.Fatalf("%d moves off s3, want all 3 ranges", drains)
				}
			},
		},
		{
			name:   "max moves caps the plan",
			shards: four,
			ranges: allOnS1,
			opts:   func(o *Options) { o.Strategy = StrategySize; o.MaxMoves = 2 },
			check: func(t *testing.T, p *Plan) {
				if p.Moves != 2 {
					t.Fatalf("%d moves, want exactly the cap 2:\n%s", p.Moves, describe(p))
				}
				if !hasNote(p, "--max-moves 2") {
					t.Fatalf("want a note about the cap, got %q", p.Notes)
				}
			},
		},
		{
			name:   "max bytes caps the plan",
			shards: four,
			ranges: allOnS1,
			opts:   func(o *Options) { o.Strategy = StrategySize; o.MaxBytes = 250 },
			check: func(t *testing.T, p *Plan) {
				if p.BytesToMove > 250 || p.Moves == 0 {
					t.Fatalf("moved %d bytes in %d moves, want some and at most 250:\n%s", p.BytesToMove, p.Moves, describe(p))
				}
				if !hasNote(p, "--max-bytes 250") {
					t.Fatalf("want a note about the cap, got %q", p.Notes)
				}
			},
		},
		{
			name:   "improvement threshold skips a move that mostly shifts the problem",
			shards: map[string]string{"s1": "", "s2": ""},
			// single-key ranges cannot be cut, so only whole moves are possible: moving
			// tenant 5 (0.5) off s1 (1.4) to s2 (0.6) lowers the max by 0.3, 60% of 0.5.
			ranges: []rng{{":5", "s1", 0, 0}, {"5:6", "s1", 50, 0}, {"6:7", "s1", 90, 0}, {"7:", "s2", 60, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize; o.ImprovementThreshold = 0.7 },
			check: func(t *testing.T, p *Plan) {
				if !p.Empty() || p.Balanced {
					t.Fatalf("want no step (gain 60%% < 70%%):\n%s", describe(p))
				}
				if txt := p.Text(); !strings.Contains(txt, "nothing to do that improves the balance") {
					t.Fatalf("text:\n%s", txt)
				}
			},
		},
		{
			name:   "improvement threshold lets a good enough move through",
			shards: map[string]string{"s1": "", "s2": ""},
			ranges: []rng{{":5", "s1", 0, 0}, {"5:6", "s1", 50, 0}, {"6:7", "s1", 90, 0}, {"7:", "s2", 60, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize; o.ImprovementThreshold = 0.5 },
			check: func(t *testing.T, p *Plan) {
				if p.Moves != 1 || p.Steps[0].Range.String() != "5:6" {
					t.Fatalf("want tenant 5 moved:\n%s", describe(p))
				}
			},
		},
		{
			name:   "a frozen range stays put",
			shards: map[string]string{"s1": "", "s2": ""},
			ranges: []rng{{":1000", "s1", 1000, 0}, {"1000:", "s2", 10, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize },
			state: func(s *catalog.State) {
				s.Ranges[0].State, s.Ranges[0].Migration = catalog.RangeFrozen, "m1"
			},
			check: func(t *testing.T, p *Plan) {
				if !p.Empty() {
					t.Fatalf("want no step on a frozen range:\n%s", describe(p))
				}
				if !hasNote(p, "frozen") || p.LowerBound < 1.97 {
					t.Fatalf("notes %q, lower bound %.3f", p.Notes, p.LowerBound)
				}
			},
		},
		{
			name:   "writes strategy follows writes, not bytes",
			shards: map[string]string{"s1": "", "s2": ""},
			ranges: []rng{{":100", "s1", 10, 500}, {"100:200", "s1", 1000, 10}, {"200:300", "s2", 10, 10}, {"300:", "s2", 1000, 10}},
			opts:   func(o *Options) { o.Strategy = StrategyWrites },
			check: func(t *testing.T, p *Plan) {
				if p.Moves == 0 {
					t.Fatalf("s1 has 96%% of the writes, want a move:\n%s", describe(p))
				}
				if p.MaxMeanAfter >= p.MaxMeanBefore {
					t.Fatalf("max/mean %.3f -> %.3f", p.MaxMeanBefore, p.MaxMeanAfter)
				}
			},
		},
		{
			name:   "no stats: only draining works",
			shards: map[string]string{"s1": "", "s2": catalog.ShardDraining},
			ranges: []rng{{":100", "s1", 0, 0}, {"100:", "s2", 0, 0}},
			check: func(t *testing.T, p *Plan) {
				if p.Moves != 1 || p.Steps[0].To != "s1" || !hasNote(p, "stats collect") {
					t.Fatalf("want the drain of s2 and a note to collect stats:\n%s", describe(p))
				}
			},
		},
		{
			name:   "range revisions are recorded for every touched range",
			shards: map[string]string{"s1": "", "s2": ""},
			ranges: []rng{{":100", "s1", 100, 0}, {"100:200", "s1", 100, 0}, {"200:", "s1", 100, 0}},
			opts:   func(o *Options) { o.Strategy = StrategySize },
			check: func(t *testing.T, p *Plan) {
				if p.Revision != 100 || len(p.Ranges) == 0 {
					t.Fatalf("revision %d, ranges %+v", p.Revision, p.Ranges)
				}
				for _, rr := range p.Ranges {
					if rr.Key != catalog.RangeKey(rr.Range.Lo) || rr.ModRevision < 10 {
						t.Fatalf("range revision %+v", rr)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, stats := fixture(t, tt.shards, tt.ranges, tt.hots)
			if tt.state != nil {
				tt.state(st)
			}
			opts := DefaultOptions()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			p, err := Compute(st, stats, opts)
			if err != nil {
				t.Fatal(err)
			}
			execute(t, st, p)
			if opts.MaxMoves > 0 && p.Moves > opts.MaxMoves {
				t.Fatalf("%d moves over the cap %d", p.Moves, opts.MaxMoves)
			}
			tt.check(t, p)
		})
	}
}

func hasNote(p *Plan, sub string) bool {
	for _, n := range p.Notes {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}

func TestComputeRejectsBadInput(t *testing.T) {
	good := []rng{{":100", "s1", 10, 0}, {"100:", "s2", 10, 0}}
	two := map[string]string{"s1": "", "s2": ""}
	tests := []struct {
		name string
		mod  func(*catalog.State, *catalog.Stats, *Options)
		want string
	}{
		{"bad threshold", func(_ *catalog.State, _ *catalog.Stats, o *Options) { o.Threshold = 1.5 }, "threshold 1.5"},
		{"bad strategy", func(_ *catalog.State, _ *catalog.Stats, o *Options) { o.Strategy = "speed" }, `strategy "speed"`},
		{"negative caps", func(_ *catalog.State, _ *catalog.Stats, o *Options) { o.MaxMoves = -1; o.MaxBytes = -1 }, "max moves -1"},
		{"gap in ranges", func(s *catalog.State, _ *catalog.Stats, _ *Options) { s.Ranges[1].Range.Lo = 200 }, "gap between"},
		{"unknown shard", func(s *catalog.State, _ *catalog.Stats, _ *Options) { s.Ranges[1].Shard = "s9" }, "unknown shard"},
		{"all draining", func(s *catalog.State, _ *catalog.Stats, _ *Options) {
			for k, v := range s.Shards {
				v.State = catalog.ShardDraining
				s.Shards[k] = v
			}
		}, "every shard is draining"},
		{"overlapping stats", func(_ *catalog.State, st *catalog.Stats, _ *Options) {
			st.Ranges = append(st.Ranges, catalog.RangeStats{Range: catalog.NewRange(50, 150), Bytes: 1})
		}, "overlap"},
		{"negative stats", func(_ *catalog.State, st *catalog.Stats, _ *Options) { st.Ranges[0].Bytes = -5 }, "bytes -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, stats := fixture(t, two, good, nil)
			opts := DefaultOptions()
			tt.mod(st, stats, &opts)
			_, err := Compute(st, stats, opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInput) && !errors.Is(err, ErrOptions) {
				t.Fatalf("err %v wraps neither ErrInput nor ErrOptions", err)
			}
		})
	}
	if _, err := Compute(nil, nil, DefaultOptions()); !errors.Is(err, ErrInput) {
		t.Fatalf("nil state: %v", err)
	}
}

func TestDeterministic(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	st, stats := randomFleet(r, 12, 300, 40, true)
	opts := DefaultOptions()
	first, err := Compute(st, stats, opts)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := first.MarshalIndent()
	if first.Empty() {
		t.Fatal("the random fleet should need steps")
	}
	for i := 0; i < 5; i++ {
		r.Shuffle(len(st.Ranges), func(a, b int) { st.Ranges[a], st.Ranges[b] = st.Ranges[b], st.Ranges[a] })
		r.Shuffle(len(stats.Ranges), func(a, b int) { stats.Ranges[a], stats.Ranges[b] = stats.Ranges[b], stats.Ranges[a] })
		r.Shuffle(len(stats.HotKeys), func(a, b int) { stats.HotKeys[a], stats.HotKeys[b] = stats.HotKeys[b], stats.HotKeys[a] })
		p, err := Compute(st, stats, opts)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := p.MarshalIndent()
		if !bytes.Equal(got, want) {
			t.Fatalf("run %d with shuffled input gave a different plan", i)
		}
	}
}

// TestNeverWorse plans random fleets (fixed seed) and checks the invariants on each: the
// largest load never grows without a drain, caps hold, the result is within the bound, and
// the steps execute in order on the catalog.
func TestNeverWorse(t *testing.T) {
	r := rand.New(rand.NewSource(42))
	n := 300
	if testing.Short() {
		n = 60
	}
	for i := 0; i < n; i++ {
		drain := i%5 == 4
		st, stats := randomFleet(r, 2+r.Intn(12), 1+r.Intn(150), r.Intn(20), drain)
		opts := DefaultOptions()
		opts.Strategy = []Strategy{StrategySize, StrategyWrites, StrategyBalanced}[i%3]
		opts.Threshold = []float64{0, 0.05, 0.1, 0.3}[r.Intn(4)]
		opts.ImprovementThreshold = []float64{0, 0.1, 0.5}[r.Intn(3)]
		opts.IsolateHotKeys = r.Intn(4) != 0
		if r.Intn(4) == 0 {
			opts.MaxMoves = 1 + r.Intn(5)
		}
		if r.Intn(4) == 0 {
			opts.MaxBytes = int64(r.Intn(100000))
		}
		p, err := Compute(st, stats, opts)
		if err != nil {
			t.Fatalf("fleet %d: %v", i, err)
		}
		hasDrain := false
		for _, s := range p.Steps {
			hasDrain = hasDrain || s.Drain
		}
		if !hasDrain && p.MaxMeanAfter > p.MaxMeanBefore+1e-9 {
			t.Fatalf("fleet %d: max/mean %.4f -> %.4f:\n%s", i, p.MaxMeanBefore, p.MaxMeanAfter, describe(p))
		}
		if opts.MaxMoves == 0 && opts.MaxBytes == 0 && p.MaxMeanAfter > 0 && p.MaxMeanAfter < p.LowerBound-1e-3 {
			t.Fatalf("fleet %d: max/mean after %.4f below the lower bound %.4f (%+v):\n%s", i, p.MaxMeanAfter, p.LowerBound, opts, describe(p))
		}
		if opts.MaxMoves > 0 && p.Moves > opts.MaxMoves {
			t.Fatalf("fleet %d: %d moves, cap %d", i, p.Moves, opts.MaxMoves)
		}
		if opts.MaxBytes > 0 && p.BytesToMove > opts.MaxBytes+int64(p.Moves) {
			t.Fatalf("fleet %d: %d bytes, cap %d", i, p.BytesToMove, opts.MaxBytes)
		}
		execute(t, st, p)
		if _, err := Parse(mustJSON(t, p)); err != nil {
			t.Fatalf("fleet %d: the plan does not read back: %v", i, err)
		}
	}
}

func TestRevLookup(t *testing.T) {
	hex := catalog.KeyHex(1000)
	tests := []struct {
		name    string
		cluster string
		modRev  map[string]int64
		wantKey string
		wantRev int64
	}{
		{"store format", "demo", map[string]int64{"ranges/" + hex: 5, "stats/ranges/" + hex: 9}, "ranges/" + hex, 5},
		{"full etcd key", "demo", map[string]int64{"/reshard/demo/ranges/" + hex: 6}, "/reshard/demo/ranges/" + hex, 6},
		{"full key, other cluster name", "", map[string]int64{"/reshard/x/ranges/" + hex: 7}, "/reshard/x/ranges/" + hex, 7},
		{"bare lo16", "demo", map[string]int64{hex: 8}, hex, 8},
		{"stats keys are not ranges", "demo", map[string]int64{"/reshard/demo/stats/ranges/" + hex: 9}, "ranges/" + hex, 0},
		{"unknown", "demo", nil, "ranges/" + hex, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &catalog.State{Config: catalog.Config{Cluster: tt.cluster}, ModRev: tt.modRev}
			k, rev := newRevLookup(st).lookup(1000)
			if k != tt.wantKey || rev != tt.wantRev {
				t.Fatalf("lookup = %q %d, want %q %d", k, rev, tt.wantKey, tt.wantRev)
			}
		})
	}
}
