package partitions

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func day(d int) time.Time { return time.Date(2026, 3, d, 0, 0, 0, 0, time.UTC) }

// part is a partition of events with day bounds [from, to) in March 2026.
func part(name string, from, to int) child {
	return child{schema: "public", name: name, from: bound{t: day(from)}, to: bound{t: day(to)}, owner: "app", replIdent: "d"}
}

func dayPart(d int) child { return part(fmt.Sprintf("events_p202603%02d", d), d, d+1) }

func table(children ...child) *tableInfo {
	ti := &tableInfo{schema: "public", name: "events", column: "created_at", clock: newClock(kindTimestamptz, time.UTC),
		owner: "app", replIdent: "d", children: children, taken: map[string]bool{}}
	for i, c := range children {
		ti.taken[c.name] = true
		if c.isDefault {
			ti.def = &ti.children[i]
		}
	}
	return ti
}

func daySpec(premake int, retention string) spec {
	s := spec{zone: time.UTC, premake: premake}
	s.Table, s.Column, s.Interval, s.Retention = "events", "created_at", "day", retention
	if retention != "" {
		fmt.Sscanf(retention, "%dd", &s.retN)
		s.retUnit = "day"
	}
	return s
}

func createNames(p tablePlan) string {
	var s []string
	for _, c := range p.creates {
		s = append(s, c.name)
	}
	return strings.Join(s, " ")
}

func removeNames(p tablePlan) string {
	var s []string
	for _, r := range p.removes {
		n := r.c.name
		if r.finalize {
			n += "(finalize)"
		}
		s = append(s, n)
	}
	return strings.Join(s, " ")
}

func reasons(cs []Change) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Partition+": "+c.Reason)
	}
	return strings.Join(s, "\n")
}

// TestPlanTable checks the decisions without a database: what to create, what retention
// removes, what it keeps, and which shapes are refused.
func TestPlanTable(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	def := child{schema: "public", name: "events_default", isDefault: true}
	pending := dayPart(2)
	pending.pending = true
	pendingNew := dayPart(9)
	pendingNew.pending = true
	forever := child{schema: "public", name: "events_future", from: bound{t: day(20)}, to: bound{max: true}}
	blocked := table(part("events_p20260301", 1, 2), part("events_p20260302", 2, 3))
	for k := 10; k <= 12; k++ {
		blocked.taken[fmt.Sprintf("events_p202603%02d", k)] = true // plain tables squat every name
	}
	tests := []struct {
		name    string
		spec    spec
		ti      *tableInfo
		creates string
		removes string
		skipped []string // substrings of skipped/kept reasons
		errors  []string // substrings of errors
	}{
		{name: "empty table", spec: daySpec(2, ""), ti: table(def),
			creates: "events_p20260310 events_p20260311 events_p20260312"},
		{name: "only the missing ones", spec: daySpec(3, ""), ti: table(dayPart(10), dayPart(12)),
			creates: "events_p20260311 events_p20260313", skipped: []string{"events_p20260310: exists", "events_p20260312: exists"}},
		{name: "nothing missing", spec: daySpec(1, ""), ti: table(dayPart(10), dayPart(11)),
			skipped: []string{"events_p20260310: exists", "events_p20260311: exists"}},
		{name: "covered by a coarser partition", spec: daySpec(2, ""), ti: table(part("events_march", 1, 31)),
			skipped: []string{"events_p20260310: covered by events_march"}},
		{name: "covered by two halves", spec: daySpec(0, ""), ti: table(
			child{schema: "public", name: "am", from: bound{t: day(10)}, to: bound{t: day(10).Add(12 * time.Hour)}},
			child{schema: "public", name: "pm", from: bound{t: day(10).Add(12 * time.Hour)}, to: bound{t: day(11)}}),
			skipped: []string{"events_p20260310: covered by am, pm"}},
		{name: "partial overlap refused", spec: daySpec(1, ""), ti: table(
			child{schema: "public", name: "odd", from: bound{t: day(10).Add(6 * time.Hour)}, to: bound{t: day(11)}}),
			creates: "events_p20260311", errors: []string{"cannot create events_p20260310", "only partly covered by odd"}},
		{name: "name taken by a plain table", spec: daySpec(1, ""), ti: func() *tableInfo {
			ti := table(dayPart(10))
			ti.taken["events_p20260311"] = true
			return ti
		}(), errors: []string{"a relation named public.events_p20260311 already exists and is not a partition of events"}},
		{name: "retention removes only expired", spec: daySpec(1, "3d"),
			ti:      table(def, dayPart(5), dayPart(6), dayPart(7), dayPart(8), dayPart(9), dayPart(10), dayPart(11)),
			removes: "events_p20260305 events_p20260306"}, // cutoff 7 March 12:00: [6,7) ends before, [7,8) does not
		{name: "retention boundary is inclusive", spec: daySpec(1, "3d"),
			ti:      table(dayPart(6), dayPart(10), dayPart(11)),
			removes: "events_p20260306"},
		{name: "never the last partition", spec: daySpec(2, "3d"), ti: blocked,
			removes: "events_p20260301", skipped: []string{"events_p20260302: past retention but kept: it is the last partition"},
			errors: []string{"events_p20260310", "events_p20260311", "events_p20260312"}},
		{name: "last old partition goes when new ones come", spec: daySpec(1, "3d"), ti: table(dayPart(1)),
			creates: "events_p20260310 events_p20260311", removes: "events_p20260301"},
		{name: "MAXVALUE and DEFAULT never expire", spec: daySpec(0, "1d"), ti: table(def, dayPart(10), forever),
			creates: ""},
		{name: "pending detach finished when expired", spec: daySpec(0, "3d"), ti: table(pending, pendingNew, dayPart(10)),
			removes: "events_p20260302(finalize)", skipped: []string{"events_p20260309: a DETACH PARTITION CONCURRENTLY did not finish and the partition is not past retention"}},
		{name: "pending detach without retention is reported", spec: daySpec(0, ""), ti: table(pending, dayPart(10)),
			skipped: []string{"events_p20260302: a DETACH PARTITION CONCURRENTLY did not finish and no retention is set: finish it with ALTER TABLE public.events DETACH PARTITION public.events_p20260302 FINALIZE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planTable(tc.spec, tc.ti, now)
			if got := createNames(p); got != tc.creates {
				t.Errorf("creates = %q, want %q", got, tc.creates)
			}
			if got := removeNames(p); got != tc.removes {
				t.Errorf("removes = %q, want %q", got, tc.removes)
			}
			skipped := reasons(append(p.skipped, p.kept...))
			for _, want := range tc.skipped {
				if !strings.Contains(skipped, want) {
					t.Errorf("skipped:\n%s\nwant %q", skipped, want)
				}
			}
			errs := strings.Join(p.errors, "\n")
			for _, want := range tc.errors {
				if !strings.Contains(errs, want) {
					t.Errorf("errors:\n%s\nwant %q", errs, want)
				}
			}
			if len(tc.errors) == 0 && len(p.errors) > 0 {
				t.Errorf("unexpected errors: %v", p.errors)
			}
		})
	}
}

func TestNeedsFix(t *testing.T) {
	ti := table()
	ti.replIdent, ti.riIndex, ti.riIndexName = "i", 100, "events_ri"
	ti.grants = []grant{{"reader", "SELECT", false}, {"writer", "INSERT", true}}
	good := dayPart(10)
	good.replIdent, good.riParentIndex = "i", 100
	good.grants = []grant{{"reader", "SELECT", false}, {"writer", "INSERT", true}, {"extra", "DELETE", false}}
	if f, ok := needsFix(ti, good); ok {
		t.Errorf("a matching partition needs a fix: %s", f.reason(ti))
	}
	bad := dayPart(11)
	bad.owner = "someone"
	bad.grants = []grant{{"writer", "INSERT", false}}
	f, ok := needsFix(ti, bad)
	if !ok || !f.owner || !f.replIdent || len(f.grants) != 2 {
		t.Fatalf("fix = %+v, %v", f, ok)
	}
	want := "match the parent: owner someone -> app; replica identity USING INDEX (partition of events_ri); grant SELECT to reader, INSERT to writer with grant option"
	if got := f.reason(ti); got != want {
		t.Errorf("reason = %q\nwant     %q", got, want)
	}
}

func TestRunway(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		ti    *tableInfo
		want  int
		until time.Time
	}{
		{"nothing", table(), 0, time.Time{}},
		{"current missing", table(dayPart(11), dayPart(12)), 0, time.Time{}},
		{"current only", table(dayPart(10)), 0, day(11)},
		{"three ahead then a gap", table(dayPart(9), dayPart(10), dayPart(11), dayPart(12), dayPart(13), dayPart(15)), 3, day(14)},
		{"coarse partition", table(part("march", 1, 31)), 20, day(31)},
		{"overlapping cover", table(part("a", 9, 12), part("b", 11, 14), part("c", 20, 21)), 3, day(14)},
		{"MAXVALUE", table(dayPart(10), child{name: "rest", from: bound{t: day(11)}, to: bound{max: true}}), 10000, day(11).AddDate(0, 0, 10000)},
	}
	for _, tc := range tests {
		n, until := runway(daySpec(4, ""), tc.ti, now)
		if n != tc.want || (until == nil) != tc.until.IsZero() || until != nil && !until.Equal(tc.until) {
			t.Errorf("%s: runway = %d until %v, want %d until %v", tc.name, n, until, tc.want, tc.until)
		}
	}
}

// BenchmarkPlanTable plans a table holding three years of daily partitions (the work of one
// table on one shard, without I/O).
func BenchmarkPlanTable(b *testing.B) {
	var parts []child
	start := day(10).AddDate(-3, 0, 0)
	for d := start; d.Before(day(15)); d = d.AddDate(0, 0, 1) {
		parts = append(parts, child{schema: "public", name: partitionName("events", d), from: bound{t: d}, to: bound{t: d.AddDate(0, 0, 1)}, owner: "app", replIdent: "d"})
	}
	ti := table(parts...)
	s := daySpec(7, "365d")
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		p := planTable(s, ti, now)
		if len(p.removes) == 0 {
			b.Fatal("nothing past retention")
		}
		runway(s, ti, now)
	}
}
