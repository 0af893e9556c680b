package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyPartitionRun holds the partition scheduler's last run. It is one key, overwritten by
// each run, so it never grows; runs that did something are also in the history.
const keyPartitionRun = "partitions/last_run"

// PartitionRunKey is the key of the scheduler's last run, relative to the cluster prefix.
func PartitionRunKey() string { return keyPartitionRun }

// ErrNotLeader: the process that tried to record a run is not (or no longer) the leader
// of its election: its lease expired or it resigned, and the new leader records its own.
var ErrNotLeader = errors.New("not the leader of the election any more (its lease expired or it resigned)")

// Outcomes of a partition maintenance run.
const (
	PartitionRunOK     = "ok"     // every shard and table done
	PartitionRunErrors = "errors" // some tables or shards failed, the others were done
	PartitionRunFailed = "failed" // nothing was done (catalog unreadable, bad specs)
	PartitionRunIdle   = "idle"   // the catalog has no partition specs
)

// maxPartitionRunBytes keeps the record well under etcd's default request limit (1.5 MiB).
const maxPartitionRunBytes = 1 << 20

// PartitionRun is the record of one partition maintenance run over the fleet, as the
// scheduler stores it for `reshard status`.
type PartitionRun struct {
	Time     time.Time `json:"time"` // when the run started (UTC)
	Seconds  float64   `json:"seconds"`
	Holder   string    `json:"holder,omitempty"` // the scheduler that ran it
	Outcome  string    `json:"outcome"`          // PartitionRunOK, ...Errors, ...Failed or ...Idle
	Created  int       `json:"created"`
	Detached int       `json:"detached"`
	Dropped  int       `json:"dropped"`
	// MinRunway is the fewest premade periods left after the run over every shard and
	// table (how many whole periods after the current one have partitions); -1 if none.
	MinRunway int                 `json:"min_runway"`
	Shards    []PartitionShardRun `json:"shards,omitempty"`
	Errors    []string            `json:"errors,omitempty"` // the first few, "shard: table: message"
}

// PartitionShardRun is one shard's part of a run.
type PartitionShardRun struct {
	Shard  string              `json:"shard"`
	Error  string              `json:"error,omitempty"` // the shard could not be worked on at all
	Tables []PartitionTableRun `json:"tables,omitempty"`
}

// PartitionTableRun is one table's part of a run on one shard.
type PartitionTableRun struct {
	Table       string     `json:"table"`
	Runway      int        `json:"runway"`
	RunwayUntil *time.Time `json:"runway_until,omitempty"` // end of the covered periods
	Created     int        `json:"created,omitempty"`
	Detached    int        `json:"detached,omitempty"`
	Dropped     int        `json:"dropped,omitempty"`
	Errors      int        `json:"errors,omitempty"`
}

// PartitionRunway names one shard's table and its runway.
type PartitionRunway struct {
	Shard       string     `json:"shard"`
	Table       string     `json:"table"`
	Runway      int        `json:"runway"`
	RunwayUntil *time.Time `json:"runway_until,omitempty"`
}

// Shortest returns the shards' tables whose runway is the run's smallest, in shard then
// table order: the ones to look at first. Empty when the run saw no table.
func (r *PartitionRun) Shortest() []PartitionRunway {
	lowest := -1
	for _, sh := range r.Shards {
		for _, t := range sh.Tables {
			if lowest < 0 || t.Runway < lowest {
				lowest = t.Runway
			}
		}
	}
	var out []PartitionRunway
	for _, sh := range r.Shards {
		for _, t := range sh.Tables {
			if t.Runway == lowest {
				out = append(out, PartitionRunway{Shard: sh.Shard, Table: t.Table, Runway: t.Runway, RunwayUntil: t.RunwayUntil})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Shard != out[j].Shard {
			return out[i].Shard < out[j].Shard
		}
		return out[i].Table < out[j].Table
	})
	return out
}

// ValidatePartitionRun checks a run record before it is stored.
func ValidatePartitionRun(r *PartitionRun) error {
	var p Problems
	if r.Time.IsZero() {
		p.add("partition run: no time: set when the run started")
	}
	switch r.Outcome {
	case PartitionRunOK, PartitionRunErrors, PartitionRunFailed, PartitionRunIdle:
	default:
		p.add("partition run: outcome %q: use ok, errors, failed or idle", r.Outcome)
	}
	if r.MinRunway < -1 {
		p.add("partition run: min runway %d: use -1 (no table) or a count of periods", r.MinRunway)
	}
	if r.Created < 0 || r.Detached < 0 || r.Dropped < 0 || r.Seconds < 0 {
		p.add("partition run: negative counts or duration")
	}
	for _, sh := range r.Shards {
		if !ValidName(sh.Shard) {
			p.add("partition run: shard %q is not a shard name", sh.Shard)
		}
	}
	return p.Err()
}

// PutPartitionRun stores run as the scheduler's last run, provided leader still leads its
// election: the compare on the leader's election key is in the same transaction, so a
// scheduler that lost its lease (and whose successor may already be acting) cannot
// overwrite the new leader's record; it gets ErrNotLeader. When the run changed
// partitions, or its outcome, errors or smallest runway differ from the previous run's,
// a history event of kind EventPartitions is appended in the same transaction; a run
// like the one before adds none, so the history grows with what happened, not with time.
func (s *Store) PutPartitionRun(ctx context.Context, leader *Leader, run PartitionRun) error {
	if leader == nil || leader.election == nil {
		return fmt.Errorf("record partition run: no leader given: campaign first (Store.Campaign): %w", ErrNotLeader)
	}
	run.Time = run.Time.UTC()
	if run.Holder == "" {
		run.Holder = s.holder
	}
	if err := ValidatePartitionRun(&run); err != nil {
		return err
	}
	b, err := json.Marshal(run)
	if err != nil {
		return fmt.Errorf("record partition run: encode: %w", err)
	}
	if len(b) > maxPartitionRunBytes {
		return fmt.Errorf("%w: partition run record is %d bytes, over the %d one etcd value should hold: record fewer shards or errors", ErrInvalid, len(b), maxPartitionRunBytes)
	}
	// Resign clears the election's key; reading it here races with nothing, since the
	// caller resigns only after it stopped recording.
	lkey, lrev := leader.election.Key(), leader.election.Rev()
	if lkey == "" {
		return fmt.Errorf("record partition run: %s resigned: %w", leader.name, ErrNotLeader)
	}
	if !strings.HasPrefix(lkey, s.key(pfxLocks+"elections/")) {
		return fmt.Errorf("%w: record partition run: the leader won an election of another cluster (%s), not of %q", ErrInvalid, lkey, s.cluster)
	}
	prev, err := s.LastPartitionRun(ctx)
	if err != nil {
		return fmt.Errorf("record partition run: %w", err)
	}
	w := write{
		cmps: []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lkey), "=", lrev),
			clientv3.Compare(clientv3.CreateRevision(s.key(keyConfig)), "!=", 0),
		},
		ops: []clientv3.Op{clientv3.OpPut(s.key(keyPartitionRun), string(b))},
	}
	if partitionRunNoteworthy(prev, &run) {
		w.events = append(w.events, Event{Kind: EventPartitions, Detail: partitionRunDetail(&run)})
	}
	if _, err := s.commit(ctx, &w); err != nil {
		if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("record partition run: %w", err)
		}
		return s.whyRunRefused(ctx, leader.name, lkey, lrev)
	}
	return nil
}

// whyRunRefused tells which compare of PutPartitionRun failed.
func (s *Store) whyRunRefused(ctx context.Context, election, lkey string, lrev int64) error {
	resp, err := s.read(ctx, clientv3.OpGet(lkey), clientv3.OpGet(s.key(keyConfig), clientv3.WithCountOnly()))
	if err != nil {
		return fmt.Errorf("record partition run: %w", s.wrapEtcd(err))
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != lrev {
		return fmt.Errorf("record partition run: this process lost election %s: %w", election, ErrNotLeader)
	}
	if resp.Responses[1].GetResponseRange().Count == 0 {
		return fmt.Errorf("record partition run: %w", s.notFoundCatalog())
	}
	return fmt.Errorf("record partition run: %w", ErrConflict)
}

// partitionRunNoteworthy says whether a run goes to the history: it changed partitions,
// or it differs from the previous run in outcome, errors or smallest runway.
func partitionRunNoteworthy(prev, run *PartitionRun) bool {
	if prev == nil || run.Created+run.Detached+run.Dropped > 0 {
		return true
	}
	return prev.Outcome != run.Outcome || prev.MinRunway != run.MinRunway || !reflect.DeepEqual(prev.Errors, run.Errors)
}

func partitionRunDetail(r *PartitionRun) string {
	d := fmt.Sprintf("run by %s at %s: %s, created %d, detached %d, dropped %d", r.Holder,
		r.Time.Format(time.RFC3339), r.Outcome, r.Created, r.Detached, r.Dropped)
	if r.MinRunway >= 0 {
		d += fmt.Sprintf(", runway %d (fewest: %s)", r.MinRunway, RunwayNames(r.Shortest(), 3))
	}
	if len(r.Errors) > 0 {
		d += fmt.Sprintf(", %d errors, first: %s", len(r.Errors), r.Errors[0])
	}
	return d
}

// RunwayNames lists runways as "shard/table", at most limit of them (then "and N more").
func RunwayNames(rs []PartitionRunway, limit int) string {
	var names []string
	for i, r := range rs {
		if limit > 0 && i == limit {
			names = append(names, fmt.Sprintf("and %d more", len(rs)-limit))
			break
		}
		names = append(names, r.Shard+"/"+r.Table)
	}
	return strings.Join(names, ", ")
}

// LastPartitionRun reads the scheduler's last recorded run; nil (and no error) if no run
// was ever recorded.
func (s *Store) LastPartitionRun(ctx context.Context) (*PartitionRun, error) {
	resp, err := s.get(ctx, s.key(keyPartitionRun))
	if err != nil {
		return nil, fmt.Errorf("read the last partition run: %w", s.wrapEtcd(err))
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var r PartitionRun
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return nil, badValue(string(resp.Kvs[0].Key), err)
	}
	return &r, nil
}
