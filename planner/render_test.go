package planner

import (
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	st, stats := fixture(t, map[string]string{"s1": "", "s2": "", "s3": ""},
		[]rng{{":1000", "s1", 3000, 30}, {"1000:2000", "s2", 500, 5}, {"2000:", "s3", 500, 5}}, []hot{{42, 1200, 12}})
	p, err := Compute(st, stats, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	txt := p.Text()
	for _, want := range []string{"STEP", "split", "move", "tenant 42", "SHARD", "LOAD BEFORE", "max/mean", "lower bound", "|"} {
		if !strings.Contains(txt, want) {
			t.Errorf("text has no %q:\n%s", want, txt)
		}
	}
}
