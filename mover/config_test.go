package mover

import (
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("x", 80)
	for _, tc := range []struct{ id, want string }{
		{"m1", "reshard_m1"},
		{"Move-42.a", "reshard_move_42_a"},
		{"tenant 7→8", "reshard_tenant_7_8"},
		{long, "reshard_" + long[:46] + "_"},
	} {
		slot, pub := Names(tc.id)
		if slot != pub {
			t.Errorf("Names(%q): slot %q != publication %q", tc.id, slot, pub)
		}
		if !strings.HasPrefix(slot, tc.want) || len(slot) > 63 {
			t.Errorf("Names(%q) = %q, want prefix %q and at most 63 bytes", tc.id, slot, tc.want)
		}
	}
	a, _ := Names(long)
	b, _ := Names(long + "y")
	if a == b {
		t.Errorf("two long ids share the name %q", a)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ID: "a", SourceDSN: "host=a", TargetDSN: "host=b", Key: "tenant_id", Tables: []string{"t", "s.u"}, Range: catalog.NewRange(1, 2)}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no id", func(c *Config) { c.ID = " " }, "migration id is empty"},
		{"no tables", func(c *Config) { c.Tables = nil }, "no tables"},
		{"bad table", func(c *Config) { c.Tables = []string{"a.b.c"} }, `"a.b.c"`},
		{"dup table", func(c *Config) { c.Tables = []string{"t", "t"} }, "listed twice"},
		{"empty range", func(c *Config) { c.Range = catalog.NewRange(3, 3) }, "is empty"},
		{"same db", func(c *Config) { c.TargetDSN = c.SourceDSN }, "same database"},
		{"budget", func(c *Config) { c.MaxConnections = 2 }, "below the minimum"},
		{"no key", func(c *Config) { c.Key = "" }, "sharding key"},
	} {
		c := ok
		tc.mod(&c)
		probs := c.validate()
		got := strings.Join(probs, "\n")
		if (tc.want == "") != (len(probs) == 0) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCopyWorkersBudget(t *testing.T) {
	for _, tc := range []struct{ workers, max, want int }{
		{0, 0, 4}, {8, 8, 6}, {4, 3, 1}, {2, 10, 2},
	} {
		c := Config{Workers: tc.workers, MaxConnections: tc.max}.withDefaults()
		if got := c.copyWorkers(); got != tc.want {
			t.Errorf("workers %d, budget %d: %d copy workers, want %d", tc.workers, tc.max, got, tc.want)
		}
	}
}

func TestPreflightErrorMessage(t *testing.T) {
	e := &PreflightError{Problems: []string{"source: x", "target: y"}}
	if got := e.Error(); !strings.Contains(got, "2 problems") || !strings.Contains(got, "- source: x\n  - target: y") {
		t.Errorf("PreflightError = %q", got)
	}
}
