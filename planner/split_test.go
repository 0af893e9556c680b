package planner

import (
	"math"
	"strings"
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

// TestIsolateReasonNamesTheHashedTenant: under hash distribution a hot key carries its
// tenant key (stats collect records it), and the isolating split names that key beside the
// position in its reason and its isolate_tenant; stats without it (range distribution, old
// stats) keep the reason as it was.
func TestIsolateReasonNamesTheHashedTenant(t *testing.T) {
	const uuid = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d"
	for _, tc := range []struct {
		name, tenant, reason string
	}{
		{"hash, tenant known", uuid, "tenant " + uuid + " (hash 42) alone carries"},
		{"range or old stats", "", "tenant 42 alone carries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, stats := fixture(t, map[string]string{"s1": "", "s2": "", "s3": ""},
				[]rng{{":1000", "s1", 3000, 30}, {"1000:2000", "s2", 500, 5}, {"2000:", "s3", 500, 5}},
				[]hot{{42, 1200, 12}, {7, 10, 0}})
			stats.HotKeys[0].Tenant = tc.tenant
			p, err := Compute(st, stats, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			var iso *Step
			for i := range p.Steps {
				if s := &p.Steps[i]; s.Isolate != nil && *s.Isolate == 42 {
					iso = s
				}
			}
			if iso == nil || !strings.HasPrefix(iso.Reason, tc.reason) || iso.IsolateTenant != tc.tenant {
				t.Fatalf("want a split isolating 42 whose reason starts %q and isolate_tenant %q:\n%s", tc.reason, tc.tenant, describe(p))
			}
		})
	}
}
