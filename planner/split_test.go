package planner

import (
	"math"
	"testing"
)

func TestExtremeKeys(t *testing.T) {
	// Hot tenants at both ends of the key line: the cuts must stay inside the ranges.
	st, stats := fixture(t, map[string]string{"s1": "", "s2": "", "s3": ""},
		[]rng{{":0", "s1", 3000, 10}, {"0:", "s2", 3000, 10}}, []hot{{math.MinInt64, 1000, 3}, {math.MaxInt64, 1000, 3}, {math.MaxInt64 - 1, 500, 1}})
	for _, iso := range []bool{true, false} {
		opts := DefaultOptions()
		opts.IsolateHotKeys = iso
		p, err := Compute(st, stats, opts)
		if err != nil {
			t.Fatal(err)
		}
		execute(t, st, p)
		if p.Empty() || p.MaxMeanAfter >= p.MaxMeanBefore {
			t.Fatalf("isolate %v: max/mean %.3f -> %.3f:\n%s", iso, p.MaxMeanBefore, p.MaxMeanAfter, describe(p))
		}
	}
}
