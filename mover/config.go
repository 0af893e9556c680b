package mover

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

// Config describes one move of one key range from a source to a target database.
type Config struct {
	// ID is the migration id; the slot and publication are "reshard_"+ID, lower-cased with
	// every character outside [a-z0-9_] replaced by '_' (see Names).
	ID                   string
	SourceDSN, TargetDSN string
	// Key is the sharding column, e.g. "tenant_id", when Keys does not name one.
	Key string
	// Keys is the keyspace: each table's key column, the key type and the distribution.
	// Its zero value is bigint keys by range in Key.
	Keys catalog.Keyspace
	// Tables are the sharded tables in FK-safe order (parents first), optionally
	// schema-qualified ("sales.orders").
	Tables []string
	Range  catalog.KeyRange
	// Workers is the number of copy workers (default 4).
	Workers int
	// MaxConnections is the per-shard connection budget: copy workers + apply + control
	// (default 8, at least 3).
	MaxConnections int
	// MaxRate limits copy and apply to this many bytes per second; 0 means unlimited.
	MaxRate int64
	// MaxSourceLag pauses the copy while another replication slot on the source retains
	// more than this many bytes of WAL; 0 turns the check off.
	MaxSourceLag int64
	// Overwrite allows target rows in the range; they are deleted before the copy.
	Overwrite bool
	// Token is the fencing token of the driver running this mover (its migration lock's),
	// 0 for none. With a token, the mover deletes the range's rows on the target only
	// while the target's fence row of the migration carries this very token: a driver that
	// lost its lock to a newer one, which wrote its own token there, deletes nothing.
	Token int64
	// Progress, if set, is called at most a few times per second from a mover goroutine.
	Progress func(Progress)
	Logger   *slog.Logger
}

// Journal persists the migration record (the etcd catalog implements it; tests may use an
// in-memory one).
type Journal interface {
	// Load returns the record, or nil, nil if there is none.
	Load(ctx context.Context, id string) (*catalog.Migration, error)
	// Save writes the record; compare-and-swap is the store's business.
	Save(ctx context.Context, m *catalog.Migration) error
}

// Progress is a snapshot of a running mover, for progress bars and status lines.
type Progress struct {
	ID    string
	Phase string // catalog.PhaseCopying or catalog.PhaseCatchingUp
	// Copy.
	RowsCopied  int64
	BytesCopied int64
	BytesTotal  int64 // estimate from sampling; 0 if unknown
	ChunksDone  int
	ChunksTotal int
	Rate        float64       // copy bytes per second so far
	ETA         time.Duration // 0 if unknown
	Tables      map[string]catalog.TableProgress
	// Catch-up.
	AppliedLSN pglogrepl.LSN
	AppliedTxs int64
	LagBytes   int64
	LagSeconds float64
}

const (
	defaultWorkers        = 4
	defaultMaxConnections = 8
	// Control connections per shard: one pooled connection for queries (lag, checks)
	// plus the replication (source) or apply (target) connection.
	controlConns = 2
)

// withDefaults returns cfg with defaults filled in and the number of copy workers the
// connection budget allows.
func (cfg Config) withDefaults() Config {
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = defaultMaxConnections
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// copyWorkers is how many copy workers run: Workers, capped by the connection budget.
func (cfg Config) copyWorkers() int {
	w := cfg.Workers
	if max := cfg.MaxConnections - controlConns; w > max {
		w = max
	}
	if w < 1 {
		w = 1
	}
	return w
}

// validate reports every problem of the configuration itself (no I/O).
func (cfg Config) validate() []string {
	var probs []string
	if strings.TrimSpace(cfg.ID) == "" {
		probs = append(probs, "config: migration id is empty")
	}
	if cfg.SourceDSN == "" {
		probs = append(probs, "config: source DSN is empty")
	}
	if cfg.TargetDSN == "" {
		probs = append(probs, "config: target DSN is empty")
	}
	if strings.TrimSpace(cfg.keyspace().Key) == "" {
		probs = append(probs, "config: sharding key column is empty (e.g. tenant_id)")
	}
	if len(cfg.Tables) == 0 {
		probs = append(probs, "config: no tables to move: list the sharded tables, parents first")
	}
	seen := map[string]bool{}
	for _, t := range cfg.Tables {
		if _, err := catalog.SplitTableName(t); err != nil {
			probs = append(probs, "config: "+err.Error())
		}
		if seen[t] {
			probs = append(probs, fmt.Sprintf("config: table %q is listed twice", t))
		}
		seen[t] = true
	}
	if cfg.Range.Empty() {
		probs = append(probs, fmt.Sprintf("config: range %s is empty", cfg.Range))
	}
	if cfg.MaxConnections > 0 && cfg.MaxConnections < controlConns+1 {
		probs = append(probs, fmt.Sprintf("config: max connections %d is below the minimum of %d per shard (one copy worker, apply and control)", cfg.MaxConnections, controlConns+1))
	}
	if cfg.MaxRate < 0 || cfg.MaxSourceLag < 0 {
		probs = append(probs, "config: max rate and max source lag must not be negative")
	}
	if cfg.SourceDSN != "" && cfg.SourceDSN == cfg.TargetDSN {
		probs = append(probs, "config: source and target are the same database")
	}
	return probs
}

// keyspace is Keys, with Key as its key column when Keys names none.
func (cfg Config) keyspace() catalog.Keyspace { return cfg.Keys.OrKey(cfg.Key) }

// pred is the predicate selecting the range's rows of t.
func (cfg Config) pred(t *table) string { return cfg.keyspace().Pred(t.Name, "", cfg.Range) }

// Names returns the replication slot and publication names of migration id: "reshard_"
// followed by id lower-cased, with characters outside [a-z0-9_] replaced by '_'. Ids too
// long for a PostgreSQL identifier (63 bytes) are cut and suffixed with a hash.
func Names(id string) (slot, publication string) {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := "reshard_" + b.String()
	if len(name) > 63 {
		h := fnv.New32a()
		h.Write([]byte(id))
		name = fmt.Sprintf("%s_%08x", name[:54], h.Sum32())
	}
	return name, name
}

// PreflightError lists every problem preflight found; nothing was changed.
type PreflightError struct {
	Problems []string
}

func (e *PreflightError) Error() string {
	return "preflight found " + plural(len(e.Problems), "problem") + " (nothing was changed):\n  - " + strings.Join(e.Problems, "\n  - ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// ErrFlipped is returned by Start and Cancel for a migration whose range already belongs to
// the target: there is nothing left to copy, and deleting the target's rows would lose data.
var ErrFlipped = errors.New("migration has already flipped ownership to the target")
