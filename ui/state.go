package ui

import (
	"math"
	"sort"
	"time"

	"github.com/reshard/reshard/catalog"
)

// Sources is everything the page shows, as read from the catalog.
type Sources struct {
	State     *catalog.State
	Stats     *catalog.Stats        // nil: never collected
	History   []catalog.Event       // the last events, oldest first
	Run       *catalog.PartitionRun // nil: no scheduler run recorded
	Scheduler string                // the scheduler election's leader ("" if none)
	Drivers   map[string]Driver     // lock holders of the unfinished migrations
	Problems  []string              // what could not be read just now
	Now       time.Time
}

// Driver is who holds an unfinished migration's lock.
type Driver struct {
	Held   bool   `json:"held"`
	Holder string `json:"holder,omitempty"`
}

// Model is the page's data: what /api/state returns and the script draws.
type Model struct {
	Cluster    string          `json:"cluster"`
	Revision   int64           `json:"revision"`
	Generated  time.Time       `json:"generated"`
	Problems   []string        `json:"problems,omitempty"`
	Strip      []Segment       `json:"strip"`
	Shards     []ShardView     `json:"shards"`
	Mean       LoadBars        `json:"mean"`
	StatsAt    *time.Time      `json:"stats_at,omitempty"` // when the stats were collected; nil: never
	Phases     []string        `json:"phases"`             // a move's phases in order
	Migrations []MigrationView `json:"migrations"`
	History    []EventView     `json:"history"` // newest first
	Partitions PartitionsView  `json:"partitions"`
}

// Segment is a run of adjacent serving ranges of one shard, or one frozen range, on the
// key line drawn as a strip: Start and Width are fractions of the whole int64 line, so
// the strip is to scale. Merging runs keeps the strip small with many ranges.
type Segment struct {
	Range     string  `json:"range"`
	Ranges    int     `json:"ranges"` // catalog ranges in the run
	Shard     string  `json:"shard"`
	Color     string  `json:"color"`
	State     string  `json:"state"`
	Epoch     int64   `json:"epoch,omitempty"`     // of a run of one range
	Migration string  `json:"migration,omitempty"` // the migration that froze it
	Moving    string  `json:"moving,omitempty"`    // the unfinished migration moving it
	Start     float64 `json:"start"`
	Width     float64 `json:"width"`
}

// Bar is a value and its length as a fraction of the longest bar of its kind.
type Bar struct {
	Value float64 `json:"value"`
	Frac  float64 `json:"frac"`
}

// LoadBars are a shard's measured load (or the mean over the shards).
type LoadBars struct {
	Bytes  Bar `json:"bytes"`
	Rows   Bar `json:"rows"`
	Writes Bar `json:"writes_per_sec"`
}

// ShardView is one shard: its part of the key line and its measured load.
type ShardView struct {
	Name     string   `json:"name"`
	State    string   `json:"state"`
	Color    string   `json:"color"`
	Ranges   int      `json:"ranges"`
	KeyShare float64  `json:"key_share"` // fraction of the key line it owns
	Measured bool     `json:"measured"`  // the stats have a measurement of it
	Load     LoadBars `json:"load"`
}

// palette colours shards in name order; it repeats after 12 shards.
var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
	"#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#2f4b7c", "#a05195"}

// movePhases are a move's phases in the order it passes them.
var movePhases = []string{catalog.PhasePlanned, catalog.PhasePreflight, catalog.PhaseCopying, catalog.PhaseCatchingUp,
	catalog.PhaseFrozen, catalog.PhaseVerifying, catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone}

// Build makes the page's model from what was read.
func Build(src Sources) *Model {
	st := src.State
	m := &Model{Cluster: st.Config.Cluster, Revision: st.Revision, Generated: src.Now.UTC(), Problems: src.Problems,
		Phases: movePhases}
	colors := shardColors(st.Shards)
	m.Strip = strip(st.Ranges, colors, moving(st))
	m.Shards, m.Mean, m.StatsAt = shardViews(st, src.Stats, colors)
	m.Migrations = migrationViews(src)
	m.History = historyViews(src.History, historyShown)
	m.Partitions = partitionsView(st.Config, src.Run, src.Scheduler)
	return m
}

func shardColors(shards map[string]catalog.Shard) map[string]string {
	names := make([]string, 0, len(shards))
	for n := range shards {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for i, n := range names {
		out[n] = palette[i%len(palette)]
	}
	return out
}

// keyPos is where key k lies on the int64 line, from 0 (MinInt64) to 1 (past MaxInt64).
func keyPos(k int64) float64 { return (float64(k) - math.MinInt64) / math.Exp2(64) }

// span is the part of the line [0, 1] a range covers.
func span(r catalog.KeyRange) (start, width float64) {
	start = keyPos(r.Lo)
	end := 1.0
	if !r.HiInf {
		end = keyPos(r.Hi)
	}
	return start, max(end-start, 0)
}

// moving maps the lower bound of each range an unfinished move works on to its id.
func moving(st *catalog.State) map[int64]string {
	out := map[int64]string{}
	for id, m := range st.Migrations {
		if m.Kind == catalog.KindMove && !m.Terminal() {
			out[m.Range.Lo] = id
		}
	}
	return out
}

// strip merges adjacent serving ranges of one shard into one segment; a frozen range, and
// a range an unfinished move works on, is a segment of its own.
func strip(ranges []catalog.Range, colors map[string]string, moving map[int64]string) []Segment {
	out := []Segment{}
	var run catalog.KeyRange
	for i, r := range ranges {
		mid := moving[r.Range.Lo]
		if n := len(out); n > 0 && i > 0 {
			last, prev := &out[n-1], ranges[i-1]
			if r.State == catalog.RangeServing && last.State == catalog.RangeServing && r.Shard == last.Shard &&
				mid == "" && last.Moving == "" &&
				!prev.Range.HiInf && prev.Range.Hi == r.Range.Lo {
				run = catalog.KeyRange{Lo: run.Lo, Hi: r.Range.Hi, HiInf: r.Range.HiInf}
				last.Range, last.Ranges, last.Epoch = run.String(), last.Ranges+1, 0
				last.Start, last.Width = span(run)
				continue
			}
		}
		run = r.Range
		start, width := span(r.Range)
		out = append(out, Segment{Range: r.Range.String(), Ranges: 1, Shard: r.Shard, Color: colors[r.Shard], State: r.State,
			Epoch: r.Epoch, Migration: r.Migration, Moving: mid, Start: start, Width: width})
	}
	return out
}

// scale turns values into bars of the longest one, and gives the mean as a bar too.
func scale(values []float64) ([]Bar, Bar) {
	top, sum := 0.0, 0.0
	for _, v := range values {
		top = max(top, v)
		sum += v
	}
	frac := func(v float64) float64 {
		if top <= 0 {
			return 0
		}
		return v / top
	}
	bars := make([]Bar, len(values))
	for i, v := range values {
		bars[i] = Bar{Value: v, Frac: frac(v)}
	}
	if len(values) == 0 {
		return bars, Bar{}
	}
	mean := sum / float64(len(values))
	return bars, Bar{Value: mean, Frac: frac(mean)}
}

// shardViews are the shards in name order with their key share and measured load, the
// mean load over the shards, and when the stats were collected.
func shardViews(st *catalog.State, stats *catalog.Stats, colors map[string]string) ([]ShardView, LoadBars, *time.Time) {
	names := make([]string, 0, len(st.Shards))
	for n := range st.Shards {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]ShardView, len(names))
	idx := map[string]int{}
	for i, n := range names {
		idx[n] = i
		out[i] = ShardView{Name: n, State: st.Shards[n].State, Color: colors[n]}
	}
	for _, r := range st.Ranges {
		if i, ok := idx[r.Shard]; ok {
			_, w := span(r.Range)
			out[i].Ranges++
			out[i].KeyShare += w
		}
	}
	if stats == nil {
		return out, LoadBars{}, nil
	}
	var at time.Time
	bytes, rows, writes := make([]float64, len(names)), make([]float64, len(names)), make([]float64, len(names))
	for i, n := range names {
		if ss, ok := stats.Shards[n]; ok {
			out[i].Measured = true
			bytes[i], rows[i] = float64(ss.Bytes), float64(ss.Rows)
			if ss.CollectedAt.After(at) {
				at = ss.CollectedAt
			}
		}
	}
	for _, rs := range stats.Ranges {
		if i, ok := idx[rs.Shard]; ok {
			writes[i] += rs.WritesPerSec
		}
	}
	var mean LoadBars
	var bb, rb, wb []Bar
	bb, mean.Bytes = scale(bytes)
	rb, mean.Rows = scale(rows)
	wb, mean.Writes = scale(writes)
	for i := range out {
		out[i].Load = LoadBars{Bytes: bb[i], Rows: rb[i], Writes: wb[i]}
	}
	if at.IsZero() {
		return out, mean, nil
	}
	return out, mean, &at
}
