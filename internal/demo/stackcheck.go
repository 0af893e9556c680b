package demo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Baseline is every shard's fingerprint of every tenant's rows, taken before a load and
// the moves start (`reshard dev check --save`), for CheckStack.
type Baseline = BaselineOf[int64]

// BaselineOf is a Baseline of tenants with keys of type K.
type BaselineOf[K TenantID] struct {
	Taken    time.Time     `json:"taken"`
	Tables   []string      `json:"tables"`
	Snapshot SnapshotOf[K] `json:"snapshot"`
}

// LoadRecord is what a load run leaves for a later check: when it started, the tenants it
// left quiet and, once it ended, what it did. A record without an end is a load that still
// runs or was killed: all it could write is uncertain.
type LoadRecord = LoadRecordOf[int64]

// LoadRecordOf is a LoadRecord of a load on tenants with keys of type K.
type LoadRecordOf[K TenantID] struct {
	PID      int                `json:"pid"`
	Started  time.Time          `json:"started"`
	Ended    *time.Time         `json:"ended,omitempty"`
	Quiet    []K                `json:"quiet,omitempty"`
	Counters *Counters          `json:"counters,omitempty"`
	Changes  *ChangesOf[K]      `json:"changes,omitempty"`
	Ledger   []LedgerWriteOf[K] `json:"ledger,omitempty"`
}

// NewLoadRecord starts the record of a load that leaves quiet alone.
func NewLoadRecord[K TenantID](pid int, started time.Time, quiet map[K]bool) *LoadRecordOf[K] {
	rec := &LoadRecordOf[K]{PID: pid, Started: started.UTC()}
	for t := range quiet {
		rec.Quiet = append(rec.Quiet, t)
	}
	sort.Slice(rec.Quiet, func(i, j int) bool { return keyLess(rec.Quiet[i], rec.Quiet[j]) })
	return rec
}

// Finish records what the load did.
func (r *LoadRecordOf[K]) Finish(res *ResultOf[K], ended time.Time) {
	e := ended.UTC()
	r.Ended, r.Counters, r.Changes, r.Ledger = &e, &res.Counters, res.Changes, res.Ledger
}

// changes are the record's changes; for a load that did not finish, every tenant of
// tenants it may have written is uncertain.
func (r *LoadRecordOf[K]) changes(tenants []K) *ChangesOf[K] {
	if r.Ended != nil && r.Changes != nil {
		return r.Changes
	}
	ch := NewChangesOf[K]()
	quiet := map[K]bool{}
	for _, t := range r.Quiet {
		quiet[t] = true
		ch.Quiet[t] = true
	}
	for _, t := range tenants {
		if !quiet[t] {
			ch.Touched[t], ch.Uncertain[t] = true, true
		}
	}
	return ch
}

// StackReport is what CheckStack found.
type StackReport struct {
	Tenants    *TenantReport `json:"tenants"`
	Loads      int           `json:"loads"`
	Unfinished int           `json:"unfinished_loads"` // loads without an end: their tenants are uncertain
	LedgerRows int           `json:"acknowledged_ledger_rows"`
}

// CheckStack checks a fleet's data after loads and moves against base: balance = ledger on
// every shard, every acknowledged ledger row of the loads exactly once on its owner and
// nowhere else, and every tenant's rows as CompareTenants wants them, given what the loads
// (all started after base was taken) did. owner says which shard owns a tenant now.
func CheckStack[K TenantID](ctx context.Context, shards map[string]Querier, owner func(tenant K) string, base *BaselineOf[K], loads []LoadRecordOf[K]) (*StackReport, error) {
	rep := &StackReport{Loads: len(loads)}
	var tenants []K
	for _, f := range base.Snapshot {
		for t := range f {
			tenants = append(tenants, t)
		}
	}
	ch := NewChangesOf[K]()
	var ledger []LedgerWriteOf[K]
	for _, l := range loads {
		if l.Started.Before(base.Taken) {
			return nil, fmt.Errorf("demo: a load (pid %d) started at %s, before the fingerprint was taken at %s: what it wrote before cannot be told apart; take the fingerprint again with no load running",
				l.PID, l.Started.Format(time.RFC3339), base.Taken.Format(time.RFC3339))
		}
		if l.Ended == nil {
			rep.Unfinished++
		}
		ch.Add(l.changes(tenants))
		ledger = append(ledger, l.Ledger...)
	}
	rep.LedgerRows = len(ledger)
	var errs []error
	names := make([]string, 0, len(shards))
	for name := range shards {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := CheckBalances(ctx, shards[name]); err != nil {
			errs = append(errs, fmt.Errorf("shard %s: %w", name, err))
		}
	}
	if err := CheckAcked(ctx, shards, owner, ledger, false); err != nil {
		errs = append(errs, err)
	}
	tr, err := CheckTenants(ctx, shards, base.Tables, base.Snapshot, owner, ch)
	if tr == nil {
		return nil, err
	}
	rep.Tenants = tr
	if err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}
