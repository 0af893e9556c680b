package demo

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

func fp(rows int64, hash string) TableFingerprint { return TableFingerprint{Rows: rows, Hash: hash} }

// TestCompareTenants: every way a tenant's rows can differ from what they should be is
// reported with a line naming the tenant, the table and the shard; what is right is not.
func TestCompareTenants(t *testing.T) {
	start := func() Snapshot {
		return Snapshot{
			"s1": {1: {"orders": fp(10, "a"), "events": fp(230, "e1")}, 2: {"orders": fp(5, "b")}},
			"s2": {3: {"orders": fp(7, "c"), "events": fp(40, "e3")}},
		}
	}
	ownerS1 := func(t int64) string { return map[int64]string{1: "s1", 2: "s1", 3: "s2"}[t] }
	tests := []struct {
		name    string
		after   func(s Snapshot)
		owner   func(int64) string
		changes *Changes
		want    []string // substrings of the error, in any order; none: no error
	}{
		{name: "nothing changed", after: func(Snapshot) {}},
		{name: "a staying tenant lost rows", after: func(s Snapshot) { s["s1"][1]["events"] = fp(180, "x") },
			changes: &Changes{Quiet: map[int64]bool{1: true}},
			want:    []string{"tenant 1 (quiet): events on s1: 180 rows, want 230 as at the start"}},
		{name: "same count, other contents", after: func(s Snapshot) { s["s2"][3]["orders"] = fp(7, "z") },
			want: []string{"tenant 3 (untouched): orders on s2: 7 rows as at the start, but their contents differ (hash)"}},
		{name: "a table emptied", after: func(s Snapshot) { delete(s["s2"][3], "events") },
			want: []string{"tenant 3 (untouched): events on s2: 0 rows, want 40 as at the start"}},
		{name: "moved whole", after: func(s Snapshot) { s["s2"][2] = s["s1"][2]; delete(s["s1"], 2) },
			owner: func(t int64) string { return map[int64]string{1: "s1", 2: "s2", 3: "s2"}[t] }},
		{name: "moved but left on the source", after: func(s Snapshot) { s["s2"][2] = s["s1"][2] },
			owner: func(t int64) string { return map[int64]string{1: "s1", 2: "s2", 3: "s2"}[t] },
			want:  []string{"tenant 2 (untouched): orders on s1: 5 rows, but s1 does not own it (owner s2)"}},
		{name: "moved and duplicated on the target", after: func(s Snapshot) { s["s2"][2] = map[string]TableFingerprint{"orders": fp(6, "b2")}; delete(s["s1"], 2) },
			owner: func(t int64) string { return map[int64]string{1: "s1", 2: "s2", 3: "s2"}[t] },
			want:  []string{"tenant 2 (untouched): orders on s2: 6 rows, want 5 as at the start"}},
		{name: "written as acknowledged", after: func(s Snapshot) { s["s1"][1]["orders"] = fp(12, "new"); s["s1"][1]["ledger"] = fp(1, "l") },
			changes: &Changes{Touched: map[int64]bool{1: true}, Rows: map[int64]Counts{1: {"orders": 2, "ledger": 1}}}},
		{name: "written, one acknowledged row missing", after: func(s Snapshot) { s["s1"][1]["orders"] = fp(11, "new") },
			changes: &Changes{Touched: map[int64]bool{1: true}, Rows: map[int64]Counts{1: {"orders": 2}}},
			want:    []string{"tenant 1 (written): orders on s1: 11 rows, want 12 (10 at the start, +2 by acknowledged writes)"}},
		{name: "written without count change, other tables still counted", after: func(s Snapshot) { s["s1"][1]["events"] = fp(229, "x") },
			changes: &Changes{Touched: map[int64]bool{1: true}},
			want:    []string{"tenant 1 (written): events on s1: 229 rows, want 230 as at the start"}},
		{name: "uncertain tenants are not counted", after: func(s Snapshot) { s["s1"][1]["orders"] = fp(3, "x") },
			changes: &Changes{Touched: map[int64]bool{1: true}, Uncertain: map[int64]bool{1: true}}},
		{name: "uncertain tenants must still be on their owner only", after: func(s Snapshot) { s["s2"][1] = map[string]TableFingerprint{"orders": fp(1, "x")} },
			changes: &Changes{Touched: map[int64]bool{1: true}, Uncertain: map[int64]bool{1: true}},
			want:    []string{"tenant 1 (uncertain): orders on s2: 1 rows, but s2 does not own it (owner s1)"}},
		{name: "owner not checked", after: func(Snapshot) {}, owner: func(t int64) string { return "s9" },
			want: []string{"tenant 1 (untouched): orders on s1: 10 rows, but s1 does not own it (owner s9)", "tenant 1 (untouched): its owner \"s9\" is not among the shards checked"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := start()
			tt.after(after)
			owner := tt.owner
			if owner == nil {
				owner = ownerS1
			}
			ch := NewChanges()
			ch.Add(tt.changes)
			rep, err := CompareTenants(start(), after, owner, ch)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems: %v", err)
				}
			} else {
				if err == nil {
					t.Fatalf("no problem found, want %q", tt.want)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
			}
			if rep == nil || len(rep.Shards) != 2 {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

func TestCompareTenantsReport(t *testing.T) {
	before := Snapshot{"s1": {1: {"orders": fp(10, "a")}, 2: {"orders": fp(5, "b")}, 4: {"orders": fp(1, "d")}}, "s2": {3: {"orders": fp(7, "c")}}}
	ch := &Changes{Quiet: map[int64]bool{2: true}, Touched: map[int64]bool{1: true, 3: true}, Uncertain: map[int64]bool{3: true},
		Rows: map[int64]Counts{1: {"orders": 1}}}
	after := Snapshot{"s1": {1: {"orders": fp(11, "x")}, 2: {"orders": fp(5, "b")}, 4: {"orders": fp(1, "d")}}, "s2": {3: {"orders": fp(9, "y")}}}
	rep, err := CompareTenants(before, after, func(t int64) string { return map[int64]string{1: "s1", 2: "s1", 3: "s2", 4: "s1"}[t] }, ch)
	if err != nil {
		t.Fatal(err)
	}
	want := []ShardTenants{{Shard: "s1", Exact: 2, Quiet: 1, Counted: 1, Rows: 17}, {Shard: "s2", Uncertain: 1, Rows: 9}}
	if fmt.Sprint(rep.Shards) != fmt.Sprint(want) {
		t.Errorf("report %+v, want %+v", rep.Shards, want)
	}
	var b strings.Builder
	rep.Print(&b)
	if !strings.Contains(b.String(), "s1: 3 tenants, 17 rows: 2 untouched (1 quiet) equal to the start in count and hash, 1 written") {
		t.Errorf("printed:\n%s", b.String())
	}
}

// TestCompareTenantsBounded: a check that finds many problems lists a bounded number and
// says how many there were.
func TestCompareTenantsBounded(t *testing.T) {
	before, after := Snapshot{"s1": {}}, Snapshot{"s1": {}}
	for i := int64(1); i <= 30; i++ {
		before["s1"][i] = map[string]TableFingerprint{"events": fp(3, "h")}
	}
	_, err := CompareTenants(before, after, func(int64) string { return "s1" }, nil)
	if err == nil || !strings.Contains(err.Error(), "30 problem(s)") || !strings.Contains(err.Error(), "... and 10 more") {
		t.Fatalf("CompareTenants = %v", err)
	}
}

func TestCompareTenantsTwoShardsAtStart(t *testing.T) {
	before := Snapshot{"s1": {1: {"orders": fp(1, "a")}}, "s2": {1: {"orders": fp(1, "a")}}}
	_, err := CompareTenants(before, before, func(int64) string { return "s1" }, nil)
	if err == nil || !strings.Contains(err.Error(), "tenant 1: rows on s1 and s2 at the start") {
		t.Fatalf("CompareTenants = %v", err)
	}
}

// TestQuietTenants: any run of n tenants in id order that are not among the busiest holds
// a quiet one, and the busiest are never quiet.
func TestQuietTenants(t *testing.T) {
	ts, err := GenerateTenants(DataOptions{Tenants: 200, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 5} {
		q := QuietTenants(ts, n, 4)
		byID := append([]Tenant(nil), ts...)
		sort.Slice(byID, func(i, j int) bool { return byID[i].ID < byID[j].ID })
		run := 0
		for _, tn := range byID {
			if tn.Rank <= 4 {
				if q[tn.ID] {
					t.Errorf("n=%d: tenant of rank %d is quiet", n, tn.Rank)
				}
				continue
			}
			if q[tn.ID] {
				run = 0
				continue
			}
			if run++; run >= n {
				t.Fatalf("n=%d: %d tenants in a row without a quiet one", n, run)
			}
		}
		if len(q) < (len(ts)-4)/n {
			t.Errorf("n=%d: only %d quiet tenants", n, len(q))
		}
	}
	if len(QuietTenants(ts, 0, 0)) != 0 {
		t.Error("n=0 must pick none")
	}
}

// TestCheckTenantsAfterLoad: after a load that leaves a spread of tenants quiet, every
// tenant's rows on every shard are what the start and the load's acknowledged changes say
// (the loader's own accounting, checked against PostgreSQL); then rows lost, altered or
// copied behind the load's back are each reported naming the tenant, table and shard.
func TestCheckTenantsAfterLoad(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, DataOptions{Tenants: 30, Scale: 0.05, Seed: 5})
	quiet := QuietTenants(s.tenants, 3, 2)
	before, err := TakeSnapshot(ctx, s.db, Tables)
	if err != nil {
		t.Fatal(err)
	}
	router, err := NewStaticRouter(s.ranges, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Load(ctx, LoadOptions{Tenants: s.tenants, Router: router, Workers: 3, Duration: 2 * time.Second, Seed: 3, Quiet: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if res.Acked == 0 || res.Failed != 0 || res.Unknown != 0 || res.ByKind[TxDelete] == 0 {
		t.Fatalf("load did not run cleanly: %+v %v", res.Counters, res.Errors)
	}
	for q := range quiet {
		if res.Changes.Touched[q] {
			t.Errorf("quiet tenant %d was written to", q)
		}
	}
	rep, err := CheckTenants(ctx, s.db, Tables, before, s.owner, res.Changes)
	if err != nil {
		t.Fatalf("after a clean load: %v", err)
	}
	var b strings.Builder
	rep.Print(&b)
	t.Logf("tenants checked:\n%s", b.String())
	for _, sh := range rep.Shards {
		if sh.Quiet == 0 || sh.Counted == 0 {
			t.Errorf("shard %s: %d quiet and %d written tenants checked, want some of each", sh.Shard, sh.Quiet, sh.Counted)
		}
	}

	// Behind the load's back: a quiet tenant loses an event, another's order changes, and
	// a written tenant's row appears on the shard that does not own it.
	var q1, q2, busy int64
	for _, tn := range s.tenants {
		switch {
		case quiet[tn.ID] && q1 == 0:
			q1 = tn.ID
		case quiet[tn.ID] && q2 == 0:
			q2 = tn.ID
		case res.Changes.Touched[tn.ID] && busy == 0:
			busy = tn.ID
		}
	}
	other := map[string]string{"s1": "s2", "s2": "s1"}
	if _, err := s.pool[s.owner(q1)].Exec(ctx, `DELETE FROM events WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM events WHERE tenant_id = $1 LIMIT 1)`, q1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool[s.owner(q2)].Exec(ctx, `UPDATE orders SET total = total + 1 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM orders WHERE tenant_id = $1 LIMIT 1)`, q2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool[other[s.owner(busy)]].Exec(ctx, `INSERT INTO ledger (tenant_id, amount, memo) VALUES ($1, 1, 'stray')`, busy); err != nil {
		t.Fatal(err)
	}
	_, err = CheckTenants(ctx, s.db, Tables, before, s.owner, res.Changes)
	t.Logf("after the damage: %v", err)
	for _, want := range []string{
		fmt.Sprintf("tenant %d (quiet): events on %s: ", q1, s.owner(q1)),
		fmt.Sprintf("tenant %d (quiet): orders on %s: ", q2, s.owner(q2)),
		"as at the start, but their contents differ (hash)",
		fmt.Sprintf("tenant %d (written): ledger on %s: 1 rows, but %s does not own it", busy, other[s.owner(busy)], other[s.owner(busy)]),
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("the check does not report %q", want)
		}
	}
}
