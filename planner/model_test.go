package planner

import (
	"testing"

	"github.com/reshard/reshard/catalog"
)

func TestStatsOfAnOldSplitAreShared(t *testing.T) {
	// Stats collected when [0,200) was one range still count after it was split.
	st, _ := fixture(t, map[string]string{"s1": "", "s2": ""},
		[]rng{{":0", "s2", 0, 0}, {"0:100", "s1", 0, 0}, {"100:200", "s1", 0, 0}, {"200:", "s2", 0, 0}}, nil)
	stats := &catalog.Stats{Ranges: []catalog.RangeStats{{Range: catalog.NewRange(0, 200), Bytes: 400}}}
	opts := DefaultOptions()
	opts.Strategy = StrategySize
	p, err := Compute(st, stats, opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Moves != 1 || p.Steps[0].Bytes != 200 || shardLoad(p, "s1").Bytes != 400 {
		t.Fatalf("want one of the halves (200 bytes each) moved:\n%s", describe(p))
	}
}

func TestUnfinishedMigrationPinsItsRange(t *testing.T) {
	st, stats := fixture(t, map[string]string{"s1": "", "s2": ""},
		[]rng{{":100", "s1", 500, 0}, {"100:200", "s1", 500, 0}, {"200:", "s2", 100, 0}}, nil)
	opts := DefaultOptions()
	opts.Strategy = StrategySize
	st.Migrations = map[string]catalog.Migration{
		"done": {ID: "done", Range: catalog.Below(100), Phase: catalog.PhaseDone},
		"m7":   {ID: "m7", Range: catalog.NewRange(100, 200), Phase: catalog.PhaseCopying},
	}
	p, err := Compute(st, stats, opts)
	if err != nil {
		t.Fatal(err)
	}
	execute(t, st, p)
	for _, s := range p.Steps {
		if s.Range.Overlaps(catalog.NewRange(100, 200)) {
			t.Fatalf("step %d touches the range migration m7 is copying:\n%s", s.N, describe(p))
		}
	}
	if p.Moves == 0 {
		t.Fatalf("want the other range of s1 moved:\n%s", describe(p))
	}
}
