package catalog

import (
	"strconv"
	"time"
)

// Config is the keyspace of a cluster: the sharding column, the sharded tables and the
// date-partition specs. Stored at /reshard/<cluster>/config. Keyspace() is how its rows
// fall on the key line.
type Config struct {
	Cluster string   `json:"cluster"`
	Key     string   `json:"key"` // the default key column
	Tables  []string `json:"tables"`
	// TableKeys: the key column of each table whose column is not Key.
	TableKeys    map[string]string `json:"table_keys,omitempty"`
	KeyType      KeyType           `json:"key_type,omitempty"`     // "": bigint
	Distribution Distribution      `json:"distribution,omitempty"` // "": range
	Partitions   []PartitionSpec   `json:"partitions,omitempty"`
}

// PartitionSpec keeps a date-partitioned table's partitions made ahead of time.
type PartitionSpec struct {
	Table           string `json:"table"`
	Column          string `json:"column"`
	Interval        string `json:"interval"`                   // day, week or month
	Premake         int    `json:"premake,omitempty"`          // partitions ahead of now; default 4
	Retention       string `json:"retention,omitempty"`        // e.g. "30d", "12w", "6m"; empty keeps all
	RetentionAction string `json:"retention_action,omitempty"` // detach (default) or drop
	TimeZone        string `json:"time_zone,omitempty"`        // default UTC
}

// Shard states.
const (
	ShardActive   = "active"
	ShardDraining = "draining"
)

// Shard is one PostgreSQL database holding part of the key line. DSN never carries a
// password: the password comes from DSNEnv's variable or from libpq's .pgpass.
type Shard struct {
	Name   string    `json:"name"`
	DSN    string    `json:"dsn,omitempty"`
	DSNEnv string    `json:"dsn_env,omitempty"`
	State  string    `json:"state"`
	Added  time.Time `json:"added"`
}

// Range states.
const (
	RangeServing = "serving"
	RangeFrozen  = "frozen"
)

// Range is the ownership of one key range by one shard. Epoch grows by one at every
// ownership change, so a router can tell a stale entry.
type Range struct {
	Range     KeyRange `json:"range"`
	Shard     string   `json:"shard"`
	State     string   `json:"state"`
	Epoch     int64    `json:"epoch"`
	Migration string   `json:"migration,omitempty"` // the migration that froze it
}

// TableStats is the size of one table on one shard.
type TableStats struct {
	Bytes int64 `json:"bytes"`
	Rows  int64 `json:"rows"`
}

// ShardStats is measured per shard by `reshard stats collect`.
type ShardStats struct {
	Shard       string                `json:"shard"`
	Bytes       int64                 `json:"bytes"`
	Rows        int64                 `json:"rows"`
	Tables      map[string]TableStats `json:"tables,omitempty"`
	CollectedAt time.Time             `json:"collected_at"`
}

// RangeStats is measured per range.
type RangeStats struct {
	Range        KeyRange  `json:"range"`
	Shard        string    `json:"shard"`
	Bytes        int64     `json:"bytes"`
	Rows         int64     `json:"rows"`
	WritesPerSec float64   `json:"writes_per_sec"`
	Keys         int64     `json:"keys,omitempty"` // distinct tenants seen
	CollectedAt  time.Time `json:"collected_at"`
}

// HotKey is one tenant among the top-K by bytes or by writes/s. Custom holds an
// application's own numbers (`reshard stats put`), e.g. read QPS. Key is the tenant's
// position on the key line; under hash distribution that is a hash no one recognises, so
// Tenant holds the tenant key itself as text (empty under range, where Key is the tenant).
type HotKey struct {
	Key          int64              `json:"key"`
	Tenant       string             `json:"tenant,omitempty"`
	Shard        string             `json:"shard"`
	Bytes        int64              `json:"bytes"`
	Rows         int64              `json:"rows"`
	WritesPerSec float64            `json:"writes_per_sec"`
	Custom       map[string]float64 `json:"custom,omitempty"`
	CollectedAt  time.Time          `json:"collected_at"`
}

// TenantName is how output names the tenant at position key: under hash, with its tenant
// key known, `3f2c...-... (hash -4660462969137640930)`; otherwise the position alone, which
// under range is the tenant key.
func TenantName(key int64, tenant string) string {
	if tenant == "" {
		return strconv.FormatInt(key, 10)
	}
	return tenant + " (hash " + strconv.FormatInt(key, 10) + ")"
}

// Name is TenantName of the hot key.
func (h HotKey) Name() string { return TenantName(h.Key, h.Tenant) }

// Stats is everything known about load, read at one catalog revision.
type Stats struct {
	Revision int64                 `json:"revision,omitempty"` // etcd revision it was read at
	Shards   map[string]ShardStats `json:"shards"`
	Ranges   []RangeStats          `json:"ranges"`
	HotKeys  []HotKey              `json:"hot_keys"`
}

// Migration kinds.
const (
	KindMove  = "move"
	KindSplit = "split"
)

// Migration phases, in order. A migration only moves forward, except to PhaseRolledBack.
const (
	PhasePlanned    = "planned"
	PhasePreflight  = "preflight"
	PhaseCopying    = "copying"
	PhaseCatchingUp = "catching_up"
	PhaseFrozen     = "frozen" // catalog frozen, fence being installed / drained
	PhaseVerifying  = "verifying"
	PhaseFlipped    = "flipped" // commit point passed: target owns the range
	PhaseCleaningUp = "cleaning_up"
	PhaseDone       = "done"
	// PhaseRollingBack: the migration will never flip; its copy, slot, publication and
	// fences are being removed. It ends in RollbackTo (rolled_back or cancelled). The
	// journal enters it, by compare-and-swap, before any of that PostgreSQL work starts.
	PhaseRollingBack = "rolling_back"
	PhaseRolledBack  = "rolled_back"
	PhaseCancelled   = "cancelled"
)

// TableProgress is the copy progress of one table.
type TableProgress struct {
	Rows        int64 `json:"rows"`
	Bytes       int64 `json:"bytes"`
	ChunksDone  int   `json:"chunks_done"`
	ChunksTotal int   `json:"chunks_total"`
}

// CopyPlan is a migration's copy as its first run cut it into chunks, with the chunks done so
// far: a copy interrupted part way resumes with the others only (docs/mover.md, "Resumable
// copy").
type CopyPlan struct {
	Tables []CopyTable `json:"tables"`
	// Runs is how many runs of the copy have started (1 for an uninterrupted copy).
	Runs int `json:"runs"`
	// OverlapLSN: the last resumed run copied from a snapshot taken at this source
	// position, later than the slot's consistent point; the catch-up applies the source
	// transactions committed before it idempotently.
	OverlapLSN string `json:"overlap_lsn,omitempty"`
	// Pages is where the store keeps the chunks (catalog/copyplan.go), set instead of the
	// tables' chunks on a record read by a listing; GetMigration reads the chunks.
	Pages []CopyPage `json:"pages,omitempty"`
}

// CopyPage is one stored page of a table's chunks: its table's index and the hash of its
// content, which names its key.
type CopyPage struct {
	Table int    `json:"table"`
	Hash  string `json:"hash"`
}

// CopyTable is one table's chunks, in the order of the migration's tables.
type CopyTable struct {
	Table  string      `json:"table"`
	Chunks []CopyChunk `json:"chunks"`
}

// CopyChunk is one chunk: primary-key tuples in [Lo, Hi) (values as text; nil: unbounded),
// or with Blocks heap blocks in [BlockLo, BlockHi) (BlockHi < 0: unbounded).
type CopyChunk struct {
	Lo      []string `json:"lo,omitempty"`
	Hi      []string `json:"hi,omitempty"`
	Blocks  bool     `json:"blocks,omitempty"`
	BlockLo int64    `json:"block_lo,omitempty"`
	BlockHi int64    `json:"block_hi,omitempty"`
	Done    bool     `json:"done,omitempty"`
	Rows    int64    `json:"rows,omitempty"`
	Bytes   int64    `json:"bytes,omitempty"`
	// Run is the run of the copy that copied it (1 for the first).
	Run int `json:"run,omitempty"`
}

// Clone is a deep copy (a journal hands out shallow copies of the record).
func (p *CopyPlan) Clone() *CopyPlan {
	if p == nil {
		return nil
	}
	c := *p
	c.Pages = append([]CopyPage(nil), p.Pages...)
	c.Tables = make([]CopyTable, len(p.Tables))
	for i, t := range p.Tables {
		c.Tables[i] = CopyTable{Table: t.Table, Chunks: append([]CopyChunk(nil), t.Chunks...)}
	}
	return &c
}

// Timings are phase durations in seconds.
type Timings struct {
	Copy          float64 `json:"copy"`
	Catchup       float64 `json:"catchup"`
	CutoverWindow float64 `json:"cutover_window"`
	Cleanup       float64 `json:"cleanup"`
	// Window is the last cutover's steps, in order (docs/catalog.md, "Migration timings"):
	// where the window went, for the status page, the metrics and an operator.
	Window []WindowStep `json:"window,omitempty"`
}

// WindowStep is how long one step of a cutover window took.
type WindowStep struct {
	Step    string  `json:"step"` // freeze, fence, drain, catch-up, verify, sequences, flip or open
	Seconds float64 `json:"seconds"`
}

// Verification is what a cutover verified: the whole range online, at source position
// LSN, before the freeze; then, inside the window, only the rows changed since.
type Verification struct {
	LSN           string  `json:"lsn,omitempty"` // the position both snapshots held exactly
	OnlineRows    int64   `json:"online_rows"`   // rows compared online (the source's)
	OnlineChunks  int     `json:"online_chunks"`
	OnlineSeconds float64 `json:"online_seconds"`
	// ChangedSince is the row changes the apply made after LSN up to the fence (a row
	// changed twice counts twice); WindowRows the rows compared inside the window (each
	// changed row once). Without an online verification, WindowRows is the whole range.
	ChangedSince int64 `json:"changed_since"`
	WindowRows   int64 `json:"window_rows"`
	// PredictedWindow is the window (seconds) predicted before the freeze; Waiting says
	// why the cutover does not freeze yet (the prediction is over the bound).
	PredictedWindow float64 `json:"predicted_window,omitempty"`
	Waiting         string  `json:"waiting,omitempty"`
}

// Migration is the journal of one move of one range: its record in etcd makes a crash at
// any point resumable.
type Migration struct {
	ID            string                   `json:"id"`
	Kind          string                   `json:"kind"`
	Range         KeyRange                 `json:"range"`
	Source        string                   `json:"source"`
	Target        string                   `json:"target"`
	Phase         string                   `json:"phase"`
	Slot          string                   `json:"slot,omitempty"`
	Publication   string                   `json:"publication,omitempty"`
	Snapshot      string                   `json:"snapshot,omitempty"`
	ConsistentLSN string                   `json:"consistent_lsn,omitempty"`
	AppliedLSN    string                   `json:"applied_lsn,omitempty"`
	FenceLSN      string                   `json:"fence_lsn,omitempty"`
	LagBytes      int64                    `json:"lag_bytes"`
	LagSeconds    float64                  `json:"lag_seconds"`
	Tables        map[string]TableProgress `json:"tables,omitempty"`
	Copy          *CopyPlan                `json:"copy,omitempty"`
	RowsCopied    int64                    `json:"rows_copied"`
	BytesCopied   int64                    `json:"bytes_copied"`
	RowsVerified  int64                    `json:"rows_verified,omitempty"`
	Timings       Timings                  `json:"timings"`
	Plan          string                   `json:"plan,omitempty"` // id of the plan it belongs to
	Owner         string                   `json:"owner,omitempty"`
	Created       time.Time                `json:"created"`
	Updated       time.Time                `json:"updated"`
	LastError     string                   `json:"last_error,omitempty"`
	// RollbackTo is the phase a rolling_back migration ends in: rolled_back or cancelled.
	RollbackTo string `json:"rollback_to,omitempty"`
	// KeepTarget: the migration rolls back from before its copy, so the range's rows on
	// the target (if any) are not its own and stay.
	KeepTarget bool `json:"keep_target,omitempty"`
	// Verify is the last cutover's online verification and in-window compare.
	Verify *Verification `json:"verify,omitempty"`

	// ModRev is the etcd mod revision this record was read at (0: not stored yet). Store
	// compares it on every write, so two drivers cannot both advance one journal.
	ModRev int64 `json:"-"`
}

// Flipped reports whether the migration has passed its commit point: the target owns the
// range, and it can only go forward to done.
func (m *Migration) Flipped() bool {
	switch m.Phase {
	case PhaseFlipped, PhaseCleaningUp, PhaseDone:
		return true
	}
	return false
}

// Terminal reports whether the migration will not change any more.
func (m *Migration) Terminal() bool {
	switch m.Phase {
	case PhaseDone, PhaseRolledBack, PhaseCancelled:
		return true
	}
	return false
}

// MigrationHead is what every printed view of a migration starts with (`reshard status -o
// json`, the status page's state): which migration, moving what from where to where, and
// its phase, the range as text.
type MigrationHead struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Range  string `json:"range"`
	Source string `json:"source"`
	Target string `json:"target"`
	Phase  string `json:"phase"`
}

// Head is m's MigrationHead.
func (m *Migration) Head() MigrationHead {
	return MigrationHead{ID: m.ID, Kind: m.Kind, Range: m.Range.String(), Source: m.Source, Target: m.Target, Phase: m.Phase}
}

// Event kinds of the history.
const (
	EventInit       = "init"
	EventShardAdded = "shard_added"
	EventShardState = "shard_state"
	EventRangeState = "range_state"
	EventFlip       = "flip"
	EventSplit      = "split"
	EventPhase      = "phase"
	EventImport     = "import"
	EventPartitions = "partitions"
	EventConfig     = "config"
)

// Event is one entry of the append-only history.
type Event struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Range     *KeyRange `json:"range,omitempty"`
	Shard     string    `json:"shard,omitempty"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Epoch     int64     `json:"epoch,omitempty"`
	Migration string    `json:"migration,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// State is a consistent snapshot of a cluster's catalog at one etcd revision. ModRev holds
// the mod revision of every key read, so a later write can compare it.
type State struct {
	Revision int64            `json:"revision"`
	Config   Config           `json:"config"`
	Shards   map[string]Shard `json:"shards"`
	Ranges   []Range          `json:"ranges"` // sorted by Lo
	// Migrations are the journals, read at the same revision (ModRev set on each).
	Migrations map[string]Migration `json:"migrations,omitempty"`
	// ModRev maps a key relative to /reshard/<cluster>/ ("config", "shards/s1",
	// "ranges/<lo16>", "migrations/<id>") to the mod revision it was read at.
	ModRev map[string]int64 `json:"-"`
}

// Owner returns the range holding key k (the state must be valid).
func (s *State) Owner(k int64) (Range, bool) {
	lo, hi := 0, len(s.Ranges)
	for lo < hi {
		m := (lo + hi) / 2
		if s.Ranges[m].Range.Lo <= k {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return Range{}, false
	}
	r := s.Ranges[lo-1]
	return r, r.Range.Contains(k)
}
