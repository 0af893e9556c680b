package ui

import (
	"sort"
	"time"

	"github.com/reshard/reshard/catalog"
)

// defaultPremake is the partitions' premake when a spec leaves it out (PartitionSpec).
const defaultPremake = 4

// PartitionsView is the partition scheduler: its leader, its last run, and each shard's
// tables with their runway (premade periods left) against the spec's premake.
type PartitionsView struct {
	Specs    int          `json:"specs"` // date-partitioned tables in the config
	Leader   string       `json:"leader,omitempty"`
	Run      *RunView     `json:"run,omitempty"`
	Runway   []RunwayView `json:"runway"`
	Shortest []string     `json:"shortest,omitempty"` // "shard/table" with the fewest periods left
	Errors   []string     `json:"errors,omitempty"`
}

// RunView is the last run's summary.
type RunView struct {
	Time      time.Time `json:"time"`
	Seconds   float64   `json:"seconds"`
	Holder    string    `json:"holder,omitempty"`
	Outcome   string    `json:"outcome"`
	Created   int       `json:"created"`
	Detached  int       `json:"detached"`
	Dropped   int       `json:"dropped"`
	MinRunway int       `json:"min_runway"`
}

// RunwayView is one shard's table: its runway as a bar of the premake it should have.
type RunwayView struct {
	Shard   string     `json:"shard"`
	Table   string     `json:"table"`
	Runway  int        `json:"runway"`
	Premake int        `json:"premake"`
	Frac    float64    `json:"frac"` // runway / premake, at most 1
	Until   *time.Time `json:"until,omitempty"`
	Errors  int        `json:"errors,omitempty"`
	Error   string     `json:"error,omitempty"` // the shard could not be worked on
}

func partitionsView(cfg catalog.Config, run *catalog.PartitionRun, leader string) PartitionsView {
	v := PartitionsView{Specs: len(cfg.Partitions), Leader: leader, Runway: []RunwayView{}}
	if run == nil {
		return v
	}
	v.Run = &RunView{Time: run.Time, Seconds: run.Seconds, Holder: run.Holder, Outcome: run.Outcome, Created: run.Created,
		Detached: run.Detached, Dropped: run.Dropped, MinRunway: run.MinRunway}
	v.Errors = run.Errors
	premake := map[string]int{}
	for _, p := range cfg.Partitions {
		premake[p.Table] = p.Premake
		if p.Premake <= 0 {
			premake[p.Table] = defaultPremake
		}
	}
	for _, sh := range run.Shards {
		if sh.Error != "" {
			v.Runway = append(v.Runway, RunwayView{Shard: sh.Shard, Error: sh.Error})
		}
		for _, t := range sh.Tables {
			want := max(premake[t.Table], 1)
			if _, ok := premake[t.Table]; !ok {
				want = defaultPremake
			}
			v.Runway = append(v.Runway, RunwayView{Shard: sh.Shard, Table: t.Table, Runway: t.Runway, Premake: want,
				Frac: min(max(float64(t.Runway), 0)/float64(want), 1), Until: t.RunwayUntil, Errors: t.Errors})
		}
	}
	sort.SliceStable(v.Runway, func(i, j int) bool {
		if v.Runway[i].Shard != v.Runway[j].Shard {
			return v.Runway[i].Shard < v.Runway[j].Shard
		}
		return v.Runway[i].Table < v.Runway[j].Table
	})
	for _, r := range run.Shortest() {
		v.Shortest = append(v.Shortest, r.Shard+"/"+r.Table)
	}
	return v
}
