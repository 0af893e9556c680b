package ui

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The strip is to scale on the int64 line: the even split of three shards gives thirds,
// adjacent serving ranges of one shard are one segment, a frozen range stays its own.
func TestStripIsToScaleAndMergesRunsOfOneShard(t *testing.T) {
	shards := map[string]catalog.Shard{"s1": {Name: "s1"}, "s2": {Name: "s2"}, "s3": {Name: "s3"}}
	colors := shardColors(shards)
	even := catalog.EvenRanges([]string{"s1", "s2", "s3"})
	segs := strip(even, colors, nil)
	if len(segs) != 3 {
		t.Fatalf("%d segments, want 3: %+v", len(segs), segs)
	}
	for i, s := range segs {
		if math.Abs(s.Width-1.0/3) > 1e-6 {
			t.Errorf("segment %d (%s) width %v, want a third", i, s.Range, s.Width)
		}
	}
	if segs[0].Start != 0 || !near(segs[2].Start+segs[2].Width, 1) {
		t.Errorf("strip from %v to %v, want 0 to 1", segs[0].Start, segs[2].Start+segs[2].Width)
	}
	if segs[0].Color == segs[1].Color || segs[0].Color != colors["s1"] {
		t.Errorf("colours %q %q, want distinct per shard", segs[0].Color, segs[1].Color)
	}

	tests := []struct {
		name   string
		ranges []catalog.Range
		moving map[int64]string
		want   []string // range/shard/state/ranges of each segment
	}{
		{"one shard's run merges", []catalog.Range{
			{Range: catalog.Below(0), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(0, 10), Shard: "s1", State: catalog.RangeServing, Epoch: 3},
			{Range: catalog.From(10), Shard: "s2", State: catalog.RangeServing, Epoch: 1},
		}, nil, []string{":10/s1/serving/2", "10:/s2/serving/1"}},
		{"a frozen range is its own", []catalog.Range{
			{Range: catalog.Below(0), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(0, 10), Shard: "s1", State: catalog.RangeFrozen, Epoch: 1, Migration: "m1"},
			{Range: catalog.From(10), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		}, nil, []string{":0/s1/serving/1", "0:10/s1/frozen/1", "10:/s1/serving/1"}},
		{"a range being moved is its own", []catalog.Range{
			{Range: catalog.Below(0), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.NewRange(0, 10), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
			{Range: catalog.From(10), Shard: "s1", State: catalog.RangeServing, Epoch: 1},
		}, map[int64]string{0: "m1"}, []string{":0/s1/serving/1", "0:10/s1/serving/1", "10:/s1/serving/1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strip(tc.ranges, colors, tc.moving)
			var desc []string
			for _, s := range got {
				desc = append(desc, s.Range+"/"+s.Shard+"/"+s.State+"/"+strconv.Itoa(s.Ranges))
			}
			if len(desc) != len(tc.want) {
				t.Fatalf("segments %v, want %v", desc, tc.want)
			}
			for i := range desc {
				if desc[i] != tc.want[i] {
					t.Errorf("segment %d: %s, want %s", i, desc[i], tc.want[i])
				}
			}
			if f := got[len(got)-1]; !near(f.Start+f.Width, 1) || got[0].Start != 0 {
				t.Errorf("segments do not span the line: %+v", got)
			}
		})
	}
}

// Bars are fractions of the longest; the mean is marked on the same scale.
func TestScaleBarsAndMean(t *testing.T) {
	tests := []struct {
		name      string
		values    []float64
		fracs     []float64
		mean, mfr float64
	}{
		{"skewed", []float64{100, 50, 30}, []float64{1, 0.5, 0.3}, 60, 0.6},
		{"all zero", []float64{0, 0}, []float64{0, 0}, 0, 0},
		{"none", nil, nil, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bars, mean := scale(tc.values)
			for i, b := range bars {
				if !near(b.Frac, tc.fracs[i]) || b.Value != tc.values[i] {
					t.Errorf("bar %d = %+v, want frac %v", i, b, tc.fracs[i])
				}
			}
			if !near(mean.Value, tc.mean) || !near(mean.Frac, tc.mfr) {
				t.Errorf("mean %+v, want %v at %v", mean, tc.mean, tc.mfr)
			}
		})
	}
}

// The copy's ETA goes at the pace so far; none without a pace or with nothing left.
func TestETA(t *testing.T) {
	tests := []struct {
		frac    float64
		elapsed time.Duration
		want    time.Duration
		ok      bool
	}{
		{0.25, 30 * time.Second, 90 * time.Second, true},
		{0.5, time.Minute, time.Minute, true},
		{0, time.Minute, 0, false},
		{-1, time.Minute, 0, false},
		{1, time.Minute, 0, false},
		{0.5, 0, 0, false},
	}
	for _, tc := range tests {
		got, ok := eta(tc.frac, tc.elapsed)
		if ok != tc.ok || (ok && (got-tc.want).Abs() > time.Millisecond) {
			t.Errorf("eta(%v, %v) = %v %v, want %v %v", tc.frac, tc.elapsed, got, ok, tc.want, tc.ok)
		}
	}
}

// The copy's progress is measured against the stats when they tile the range (or the
// one hot tenant it holds), else against the copy's chunks; past the copy it is done.
func TestProgressEstimate(t *testing.T) {
	stats := &catalog.Stats{
		Ranges: []catalog.RangeStats{
			{Range: catalog.NewRange(0, 100), Rows: 1000, Bytes: 1 << 20},
			{Range: catalog.NewRange(100, 200), Rows: 3000, Bytes: 3 << 20},
			{Range: catalog.From(200), Rows: 500},
		},
		HotKeys: []catalog.HotKey{{Key: 42, Rows: 800, Bytes: 1 << 19}},
	}
	chunks := map[string]catalog.TableProgress{"orders": {ChunksDone: 1, ChunksTotal: 4}}
	tests := []struct {
		name   string
		m      catalog.Migration
		frac   float64
		by     string
		estRow int64
	}{
		{"stats tile the range", catalog.Migration{Range: catalog.NewRange(0, 200), Phase: catalog.PhaseCopying, RowsCopied: 1000, Tables: chunks}, 0.25, "stats", 4000},
		{"open-ended range tiled", catalog.Migration{Range: catalog.From(100), Phase: catalog.PhaseCopying, RowsCopied: 350}, 0.1, "stats", 3500},
		{"one hot tenant", catalog.Migration{Range: catalog.NewRange(42, 43), Phase: catalog.PhaseCopying, RowsCopied: 400}, 0.5, "hot key", 800},
		{"part of a stats range: chunks", catalog.Migration{Range: catalog.NewRange(0, 50), Phase: catalog.PhaseCopying, RowsCopied: 10, Tables: chunks}, 0.25, "chunks", 0},
		{"a gap in the stats: chunks", catalog.Migration{Range: catalog.NewRange(0, 300), Phase: catalog.PhaseCopying, Tables: chunks}, 0.25, "chunks", 0},
		{"more rows than measured stays under 1", catalog.Migration{Range: catalog.NewRange(0, 100), Phase: catalog.PhaseCopying, RowsCopied: 5000}, 0.99, "stats", 1000},
		{"nothing known", catalog.Migration{Range: catalog.NewRange(0, 50), Phase: catalog.PhaseCopying}, -1, "", 0},
		{"not started", catalog.Migration{Range: catalog.NewRange(0, 50), Phase: catalog.PhasePreflight}, 0, "", 0},
		{"catching up: copied", catalog.Migration{Range: catalog.NewRange(0, 50), Phase: catalog.PhaseCatchingUp}, 1, "", 0},
		{"rolled back: unknown", catalog.Migration{Range: catalog.NewRange(0, 50), Phase: catalog.PhaseRolledBack}, -1, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := progress(tc.m, stats)
			if !near(p.Frac, tc.frac) || p.By != tc.by || p.EstRows != tc.estRow {
				t.Errorf("progress %+v, want frac %v by %q est %d", p, tc.frac, tc.by, tc.estRow)
			}
		})
	}
}

// The window's parts come from the journal's window and the history's phase times, and
// add up to the window; without all three phase times there are none.
func TestWindowParts(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	m := catalog.Migration{ID: "m1", Timings: catalog.Timings{CutoverWindow: 0.1}}
	events := []catalog.Event{
		{Kind: catalog.EventPhase, Migration: "m1", To: catalog.PhaseFrozen, Time: t0},
		{Kind: catalog.EventPhase, Migration: "m2", To: catalog.PhaseVerifying, Time: t0.Add(time.Hour)},
		{Kind: catalog.EventPhase, Migration: "m1", To: catalog.PhaseVerifying, Time: t0.Add(30 * time.Millisecond)},
		{Kind: catalog.EventPhase, Migration: "m1", To: catalog.PhaseFlipped, Time: t0.Add(80 * time.Millisecond)},
	}
	parts := windowParts(m, phaseTimes(events)["m1"])
	if len(parts) != 3 {
		t.Fatalf("parts %+v, want 3", parts)
	}
	sum := 0.0
	for _, p := range parts {
		sum += p.Seconds
	}
	if !near(parts[0].Seconds, 0.03) || !near(parts[1].Seconds, 0.05) || !near(sum, 0.1) {
		t.Errorf("parts %+v, want 30ms, 50ms, and the rest of 100ms", parts)
	}
	if got := windowParts(m, phaseTimes(events[:2])["m1"]); got != nil {
		t.Errorf("parts without the flip's time: %+v", got)
	}
	m.Timings.CutoverWindow = 0.01 // shorter than the phase times say: clocks disagree
	if got := windowParts(m, phaseTimes(events)["m1"]); got != nil {
		t.Errorf("parts that do not fit the window: %+v", got)
	}
}

// Build lists unfinished migrations first with their driver, flags one no driver holds,
// shows the last events newest first, and the runway against each table's premake.
func TestBuild(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	st, err := catalog.NewState(catalog.Config{Cluster: "c", Key: "tenant_id", Tables: []string{"events"},
		Partitions: []catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", Premake: 4}}},
		[]catalog.Shard{{Name: "s1", DSN: "host=a"}, {Name: "s2", DSN: "host=b"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Migrations = map[string]catalog.Migration{
		"old":  {ID: "old", Kind: catalog.KindMove, Phase: catalog.PhaseDone, Created: now.Add(-2 * time.Hour), Updated: now.Add(-time.Hour)},
		"run":  {ID: "run", Kind: catalog.KindMove, Phase: catalog.PhaseCatchingUp, LagBytes: 10, LagSeconds: 0.5, Created: now.Add(-time.Minute)},
		"lost": {ID: "lost", Kind: catalog.KindMove, Phase: catalog.PhaseCopying, Created: now.Add(-30 * time.Minute)},
	}
	var events []catalog.Event
	for i := 1; i <= 60; i++ {
		events = append(events, catalog.Event{Seq: int64(i), Kind: catalog.EventConfig, Time: now})
	}
	runway := 1
	src := Sources{State: st, History: events, Now: now,
		Drivers: map[string]Driver{"run": {Held: true, Holder: "host pid 1"}, "lost": {}},
		Run: &catalog.PartitionRun{Time: now, Outcome: catalog.PartitionRunOK, MinRunway: runway, Shards: []catalog.PartitionShardRun{
			{Shard: "s2", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 4}}},
			{Shard: "s1", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: runway}}},
		}}}
	m := Build(src)
	var ids []string
	for _, v := range m.Migrations {
		ids = append(ids, v.ID)
	}
	if len(ids) != 3 || ids[0] != "lost" || ids[1] != "run" || ids[2] != "old" {
		t.Errorf("migrations %v, want lost, run (unfinished, oldest first), old", ids)
	}
	if v := m.Migrations[1]; v.Driver == nil || !v.Driver.Held || v.Abandoned || !v.Lagging || v.LagBytes != 10 {
		t.Errorf("run: %+v", v)
	}
	if v := m.Migrations[0]; !v.Abandoned {
		t.Errorf("lost: not flagged abandoned: %+v", v)
	}
	if v := m.Migrations[2]; v.Driver != nil || !v.Finished {
		t.Errorf("old: %+v", v)
	}
	if len(m.History) != historyShown || m.History[0].Seq != 60 || m.History[historyShown-1].Seq != 11 {
		t.Errorf("history: %d events from %d to %d, want %d from 60 to 11", len(m.History), m.History[0].Seq, m.History[len(m.History)-1].Seq, historyShown)
	}
	p := m.Partitions
	if len(p.Runway) != 2 || p.Runway[0].Shard != "s1" || !near(p.Runway[0].Frac, 0.25) || !near(p.Runway[1].Frac, 1) {
		t.Errorf("runway %+v, want s1 at 1/4 and s2 at 4/4", p.Runway)
	}
	if len(p.Shortest) != 1 || p.Shortest[0] != "s1/events" {
		t.Errorf("shortest %v", p.Shortest)
	}
	if len(m.Shards) != 2 || m.StatsAt != nil || m.Shards[0].Measured {
		t.Errorf("shards without stats: %+v", m.Shards)
	}
}

// TestWindowPartsFromTheJournal: when the journal has the window's steps, the parts are
// those steps in order, without the sequences (they run beside the catch-up, so the parts
// still add up to the window), whatever the history says.
func TestWindowPartsFromTheJournal(t *testing.T) {
	m := catalog.Migration{ID: "m1", Timings: catalog.Timings{CutoverWindow: 0.05, Window: []catalog.WindowStep{
		{Step: "freeze", Seconds: 0.004}, {Step: "fence", Seconds: 0.001}, {Step: "drain", Seconds: 0.005},
		{Step: "catch-up", Seconds: 0.006}, {Step: "verify", Seconds: 0.02}, {Step: "sequences", Seconds: 0.01},
		{Step: "flip", Seconds: 0.003}, {Step: "open", Seconds: 0.002}}}}
	parts := windowParts(m, nil)
	var names []string
	for _, p := range parts {
		names = append(names, p.Name)
	}
	want := []string{"freeze", "fence", "drain", "catch-up", "verify", "flip", "open"}
	if strings.Join(names, ",") != strings.Join(want, ",") || !near(parts[4].Seconds, 0.02) {
		t.Errorf("parts %+v, want the steps %v", parts, want)
	}
}

// TestMigrationNamesItsHashedTenant: the page names the tenant a migration moves when its
// range is one key whose hot key the stats name (hash distribution); otherwise no name.
func TestMigrationNamesItsHashedTenant(t *testing.T) {
	const u = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d"
	stats := &catalog.Stats{HotKeys: []catalog.HotKey{{Key: -7, Tenant: u}, {Key: 42}}}
	for _, tc := range []struct {
		name string
		r    catalog.KeyRange
		want string
	}{
		{"one named tenant", catalog.NewRange(-7, -6), u},
		{"one tenant by range", catalog.NewRange(42, 43), ""},
		{"a wider range", catalog.NewRange(-7, 43), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: tc.r, Phase: catalog.PhaseCopying}
			v := migrationView(m, Sources{State: &catalog.State{}, Stats: stats}, nil)
			if v.Tenant != tc.want {
				t.Errorf("tenant %q, want %q", v.Tenant, tc.want)
			}
		})
	}
}
