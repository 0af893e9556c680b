package partitions

import "time"

// Report is what one plan or apply did (or would do, when DryRun) on one shard.
type Report struct {
	Shard  string        `json:"shard,omitempty"`
	Now    time.Time     `json:"now"`
	DryRun bool          `json:"dry_run"`
	Error  string        `json:"error,omitempty"` // the shard could not be worked on at all
	Tables []TableReport `json:"tables"`
}

// TableReport is the outcome for one partitioned table. In a plan, Created, Detached,
// Dropped and Fixed are what apply would do; Runway is the runway before it.
type TableReport struct {
	Table    string   `json:"table"`
	Interval string   `json:"interval"`
	Created  []Change `json:"created,omitempty"`
	Detached []Change `json:"detached,omitempty"`
	Dropped  []Change `json:"dropped,omitempty"`
	Fixed    []Change `json:"fixed,omitempty"` // replica identity, owner or grants brought in line with the parent
	Skipped  []Change `json:"skipped,omitempty"`
	Errors   []string `json:"errors,omitempty"`
	// RetentionHeld says why partitions past retention were kept (listed in Skipped): a
	// move uses the shard.
	RetentionHeld string `json:"retention_held,omitempty"`
	Partitions    int    `json:"partitions"` // attached partitions (DEFAULT excluded) after the run
	// Runway is how many whole periods after the current one are covered by partitions
	// without a gap (0 if the current period itself is not covered).
	Runway      int        `json:"runway"`
	RunwayUntil *time.Time `json:"runway_until,omitempty"` // end of that coverage
}

// Change is one partition created, detached, dropped, fixed or skipped, and why.
type Change struct {
	Partition string `json:"partition"`
	From      string `json:"from,omitempty"` // bound as the column type prints it, or MINVALUE
	To        string `json:"to,omitempty"`
	Reason    string `json:"reason"`
	Attempts  int    `json:"attempts,omitempty"` // lock attempts apply needed (more than 1 means lock_timeout retries)
}

// Changes counts the partitions created, detached, dropped or fixed.
func (r *Report) Changes() int {
	n := 0
	for _, t := range r.Tables {
		n += len(t.Created) + len(t.Detached) + len(t.Dropped) + len(t.Fixed)
	}
	return n
}

// Errors lists the shard's error and every table error, each prefixed by its table.
func (r *Report) Errors() []string {
	var out []string
	if r.Error != "" {
		out = append(out, r.Error)
	}
	for _, t := range r.Tables {
		for _, e := range t.Errors {
			out = append(out, t.Table+": "+e)
		}
	}
	return out
}

// MinRunway is the smallest runway over the tables, or -1 without tables.
func (r *Report) MinRunway() int {
	m := -1
	for _, t := range r.Tables {
		if m < 0 || t.Runway < m {
			m = t.Runway
		}
	}
	return m
}
