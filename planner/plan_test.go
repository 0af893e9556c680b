package planner

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestPlanJSONRoundTrip(t *testing.T) {
	st, stats := fixture(t, map[string]string{"s1": "", "s2": ""},
		[]rng{{":1000", "s1", 3000, 30}, {"1000:", "s2", 100, 1}}, []hot{{42, 1000, 10}})
	p, err := Compute(st, stats, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	b := mustJSON(t, p)
	q, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b2 := mustJSON(t, q)
	if !bytes.Equal(b, b2) {
		t.Fatalf("round trip changed the plan:\n%s\n---\n%s", b, b2)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"revision", "ranges", "steps", "shards", "lower_bound", "max_mean_before", "max_mean_after", "bytes_to_move"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("plan JSON has no %q", k)
		}
	}
	// An edited file is refused.
	q.Steps[0].N = 9
	b3, _ := q.MarshalIndent()
	if _, err := Parse(b3); !errors.Is(err, ErrBadPlan) {
		t.Fatalf("edited plan: %v", err)
	}
	if _, err := Parse([]byte(`{"version": 99}`)); !errors.Is(err, ErrBadPlan) || !strings.Contains(err.Error(), "re-plan") {
		t.Fatalf("future version: %v", err)
	}
}
