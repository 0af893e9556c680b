package partitions

import (
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestPeriods checks the pure period math: the period holding now, the partitions after
// it, their names and their bound literals, per interval, zone and column type.
func TestPeriods(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		name     string
		kind     colKind
		zone     string
		interval string
		now      time.Time
		n        int      // periods after the current one to check
		names    []string // current first
		bounds   []string // FROM of each, then the TO of the last
	}{
		{
			name: "day utc timestamptz", kind: kindTimestamptz, zone: "UTC", interval: "day",
			now: time.Date(2026, 3, 10, 15, 4, 5, 0, utc), n: 2,
			names:  []string{"events_p20260310", "events_p20260311", "events_p20260312"},
			bounds: []string{"2026-03-10 00:00:00+00:00", "2026-03-11 00:00:00+00:00", "2026-03-12 00:00:00+00:00", "2026-03-13 00:00:00+00:00"},
		},
		{
			// 23:30 UTC is already the next day in Paris, and the last Sunday of March is 23h long.
			name: "day paris timestamptz across DST", kind: kindTimestamptz, zone: "Europe/Paris", interval: "day",
			now: time.Date(2026, 3, 28, 23, 30, 0, 0, utc), n: 1,
			names:  []string{"events_p20260329", "events_p20260330"},
			bounds: []string{"2026-03-29 00:00:00+01:00", "2026-03-30 00:00:00+02:00", "2026-03-31 00:00:00+02:00"},
		},
		{
			name: "day new york timestamptz, fall back", kind: kindTimestamptz, zone: "America/New_York", interval: "day",
			now: time.Date(2026, 11, 1, 3, 0, 0, 0, utc), n: 1, // still Oct 31 in New York
			names:  []string{"events_p20261031", "events_p20261101"},
			bounds: []string{"2026-10-31 00:00:00-04:00", "2026-11-01 00:00:00-04:00", "2026-11-02 00:00:00-05:00"},
		},
		{
			name: "week utc starts monday", kind: kindTimestamptz, zone: "UTC", interval: "week",
			now: time.Date(2026, 3, 15, 12, 0, 0, 0, utc), n: 1, // a Sunday
			names:  []string{"events_p20260309", "events_p20260316"},
			bounds: []string{"2026-03-09 00:00:00+00:00", "2026-03-16 00:00:00+00:00", "2026-03-23 00:00:00+00:00"},
		},
		{
			name: "week kolkata half-hour offset, across new year", kind: kindTimestamptz, zone: "Asia/Kolkata", interval: "week",
			now: time.Date(2026, 12, 31, 20, 0, 0, 0, utc), n: 1, // Friday 1 Jan 2027 01:30 in Kolkata
			names:  []string{"events_p20261228", "events_p20270104"},
			bounds: []string{"2026-12-28 00:00:00+05:30", "2027-01-04 00:00:00+05:30", "2027-01-11 00:00:00+05:30"},
		},
		{
			name: "month utc, leap february", kind: kindTimestamptz, zone: "UTC", interval: "month",
			now: time.Date(2028, 1, 31, 23, 59, 59, 0, utc), n: 2,
			names:  []string{"events_p20280101", "events_p20280201", "events_p20280301"},
			bounds: []string{"2028-01-01 00:00:00+00:00", "2028-02-01 00:00:00+00:00", "2028-03-01 00:00:00+00:00", "2028-04-01 00:00:00+00:00"},
		},
		{
			name: "month new york across DST and year", kind: kindTimestamptz, zone: "America/New_York", interval: "month",
			now: time.Date(2027, 1, 1, 2, 0, 0, 0, utc), n: 3, // still December in New York
			names:  []string{"events_p20261201", "events_p20270101", "events_p20270201", "events_p20270301"},
			bounds: []string{"2026-12-01 00:00:00-05:00", "2027-01-01 00:00:00-05:00", "2027-02-01 00:00:00-05:00", "2027-03-01 00:00:00-05:00", "2027-04-01 00:00:00-04:00"},
		},
		{
			name: "day date column in tokyo", kind: kindDate, zone: "Asia/Tokyo", interval: "day",
			now: time.Date(2026, 3, 10, 16, 0, 0, 0, utc), n: 1, // 11 March 01:00 in Tokyo
			names:  []string{"events_p20260311", "events_p20260312"},
			bounds: []string{"2026-03-11", "2026-03-12", "2026-03-13"},
		},
		{
			name: "month date column", kind: kindDate, zone: "UTC", interval: "month",
			now: time.Date(2026, 12, 15, 0, 0, 0, 0, utc), n: 1,
			names:  []string{"events_p20261201", "events_p20270101"},
			bounds: []string{"2026-12-01", "2027-01-01", "2027-02-01"},
		},
		{
			// A wall-clock column has no DST: every day starts at 00:00:00.
			name: "day timestamp column in paris across DST", kind: kindTimestamp, zone: "Europe/Paris", interval: "day",
			now: time.Date(2026, 3, 29, 10, 0, 0, 0, utc), n: 1,
			names:  []string{"events_p20260329", "events_p20260330"},
			bounds: []string{"2026-03-29 00:00:00", "2026-03-30 00:00:00", "2026-03-31 00:00:00"},
		},
		{
			name: "week timestamp column", kind: kindTimestamp, zone: "America/Los_Angeles", interval: "week",
			now: time.Date(2026, 3, 9, 5, 0, 0, 0, utc), n: 1, // Sunday 8 March 22:00 in Los Angeles
			names:  []string{"events_p20260302", "events_p20260309"},
			bounds: []string{"2026-03-02 00:00:00", "2026-03-09 00:00:00", "2026-03-16 00:00:00"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ck := newClock(tc.kind, mustLoc(t, tc.zone))
			cur := periodStart(ck.now(tc.now), tc.interval, ck.loc)
			var names, bounds []string
			for k := 0; k <= tc.n; k++ {
				s := addPeriods(cur, tc.interval, k)
				names = append(names, partitionName("events", s))
				bounds = append(bounds, ck.literal(s))
			}
			bounds = append(bounds, ck.literal(addPeriods(cur, tc.interval, tc.n+1)))
			if strings.Join(names, " ") != strings.Join(tc.names, " ") {
				t.Errorf("names = %v, want %v", names, tc.names)
			}
			if strings.Join(bounds, " | ") != strings.Join(tc.bounds, " | ") {
				t.Errorf("bounds = %v, want %v", bounds, tc.bounds)
			}
		})
	}
}

func TestRetentionCutoff(t *testing.T) {
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ret  string
		want time.Time
	}{
		{"30d", time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"2w", time.Date(2026, 3, 17, 12, 0, 0, 0, time.UTC)},
		{"1m", time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)}, // 31 Feb normalizes to 3 March
		{"12m", time.Date(2025, 3, 31, 12, 0, 0, 0, time.UTC)},
	}
	for _, tc := range tests {
		n, unit, err := catalog.ParseRetention(tc.ret)
		if err != nil {
			t.Fatal(err)
		}
		if got := retentionCutoff(now, n, unit); !got.Equal(tc.want) {
			t.Errorf("%s: cutoff = %v, want %v", tc.ret, got, tc.want)
		}
	}
}

func TestParseBoundExpr(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	tests := []struct {
		kind     colKind
		expr     string
		from, to string // as literal() prints them; "" for an error
		def      bool
	}{
		{kindTimestamptz, "FOR VALUES FROM ('2026-03-28 23:00:00+00') TO ('2026-03-29 22:00:00+00')", "2026-03-29 00:00:00+01:00", "2026-03-30 00:00:00+02:00", false},
		{kindTimestamptz, "FOR VALUES FROM ('2026-03-28 23:00:00.5+00') TO (MAXVALUE)", "2026-03-29 00:00:00.5+01:00", "MAXVALUE", false},
		{kindTimestamptz, "FOR VALUES FROM ('2026-03-10 00:00:00+05:30') TO ('infinity')", "2026-03-09 19:30:00+01:00", "MAXVALUE", false},
		{kindTimestamp, "FOR VALUES FROM (MINVALUE) TO ('2026-03-29 00:00:00')", "MINVALUE", "2026-03-29 00:00:00", false},
		{kindDate, "FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')", "2026-03-01", "2026-04-01", false},
		{kindDate, "DEFAULT", "", "", true},
		{kindDate, "FOR VALUES IN ('2026-03-01')", "", "", false},
		{kindDate, "FOR VALUES FROM ('2026-03-01', 5) TO ('2026-04-01', 7)", "", "", false},
	}
	for _, tc := range tests {
		ck := newClock(tc.kind, paris)
		from, to, def, err := ck.parseBoundExpr(tc.expr)
		if tc.def {
			if !def || err != nil {
				t.Errorf("%s: default = %v, %v", tc.expr, def, err)
			}
			continue
		}
		if tc.from == "" {
			if err == nil {
				t.Errorf("%s: want an error", tc.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := ck.show(from) + " / " + ck.show(to); got != tc.from+" / "+tc.to {
			t.Errorf("%s: got %s, want %s / %s", tc.expr, got, tc.from, tc.to)
		}
	}
}

func TestKindOf(t *testing.T) {
	for typ, want := range map[string]colKind{
		"date": kindDate, "timestamp without time zone": kindTimestamp, "timestamp(3) without time zone": kindTimestamp,
		"timestamp with time zone": kindTimestamptz, "timestamp(0) with time zone": kindTimestamptz,
	} {
		if got, ok := kindOf(typ); !ok || got != want {
			t.Errorf("kindOf(%q) = %v, %v; want %v", typ, got, ok, want)
		}
	}
	for _, typ := range []string{"bigint", "text", "time without time zone"} {
		if _, ok := kindOf(typ); ok {
			t.Errorf("kindOf(%q) accepted", typ)
		}
	}
}
