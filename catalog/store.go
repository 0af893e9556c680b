package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sentinel errors of the store. Each is wrapped with what was attempted and what to do next.
var (
	// ErrConflict: something compared in the transaction changed since it was read (another
	// writer won the race). Load again, re-check and retry, or give up.
	ErrConflict = errors.New("catalog changed since it was read (another writer won the race): load it again and retry")
	// ErrNotFound: the key (catalog, range, migration) does not exist.
	ErrNotFound = errors.New("not found in the catalog")
	// ErrExists: a create found the key already there (init over an existing catalog, a
	// shard or migration that exists).
	ErrExists = errors.New("already exists in the catalog")
)

// Key names relative to /reshard/<cluster>/.
const (
	keyConfig     = "config"
	keySeq        = "seq" // last history sequence number, compared by every history append
	pfxShards     = "shards/"
	pfxRanges     = "ranges/"
	pfxStats      = "stats/"
	pfxShardStats = "stats/shards/"
	pfxRangeStats = "stats/ranges/"
	pfxHotKeys    = "stats/hotkeys/"
	pfxMigrations = "migrations/"
	pfxHistory    = "history/"
	pfxLocks      = "locks/"
)

// RangeKey is the key of the range starting at lo, relative to the cluster prefix.
func RangeKey(lo int64) string { return pfxRanges + KeyHex(lo) }

// ShardKey is the key of a shard, relative to the cluster prefix.
func ShardKey(name string) string { return pfxShards + name }

// MigrationKey is the key of a migration journal, relative to the cluster prefix.
func MigrationKey(id string) string { return pfxMigrations + id }

func historyKey(seq int64) string { return fmt.Sprintf("%s%020d", pfxHistory, seq) }

func hotKeyKey(k int64) string { return pfxHotKeys + strconv.FormatInt(k, 10) }

// Store reads and writes one cluster's catalog in etcd under /reshard/<cluster>/.
// It is safe for concurrent use; every write is one etcd transaction.
type Store struct {
	cli       *clientv3.Client
	kv        clientv3.KV // cli's, except in tests that lose replies on purpose
	cluster   string
	prefix    string
	maxTxnOps int
	pageSize  int // keys per read of a paged scan (load.go)
	// maxTxnBytes bounds the keys and values one batched write sends (limits.go).
	maxTxnBytes int
	// retryBudget bounds the retries of a call through transient etcd errors (retry.go).
	retryBudget time.Duration
	onRetry     func(error) // tests: sees every transient failure that is retried
	now         func() time.Time
	holder      string
	closeFn     func() error
	// plans caches the pages of the copy plans this store wrote (copyplan.go).
	plans pageCache
}

// Option tunes a Store.
type Option func(*Store)

// WithMaxTxnOps sets the most operations one transaction may hold; it must not exceed the
// etcd server's --max-txn-ops (default 128).
func WithMaxTxnOps(n int) Option { return func(s *Store) { s.maxTxnOps = n } }

// WithMaxTxnBytes sets the most bytes of keys and values a batched write (init, import,
// stats) puts in one transaction; keep it well under the etcd server's --max-request-bytes
// (default 1.5 MiB; reshard's default is 1 MiB).
func WithMaxTxnBytes(n int) Option { return func(s *Store) { s.maxTxnBytes = n } }

// WithPageSize sets how many keys one read returns when Load, a cache's sync or Export
// read a big catalog in pages (default 5000), all pages at one revision.
func WithPageSize(n int) Option { return func(s *Store) { s.pageSize = n } }

// WithClock sets the clock used for timestamps (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithHolder names this process in locks and elections (default: host and pid).
func WithHolder(h string) Option { return func(s *Store) { s.holder = h } }

// NewStore returns a store for cluster over an etcd client the caller keeps open.
func NewStore(cli *clientv3.Client, cluster string, opts ...Option) (*Store, error) {
	if !ValidName(cluster) {
		return nil, fmt.Errorf("cluster name %q: use lower-case letters, digits and _ (at most 48), starting with a letter", cluster)
	}
	s := &Store{cli: cli, kv: cli.KV, cluster: cluster, prefix: "/reshard/" + cluster + "/", maxTxnOps: 128, pageSize: defaultPageSize, maxTxnBytes: defaultMaxTxnBytes, retryBudget: defaultRetryBudget, now: time.Now, holder: defaultHolder()}
	for _, o := range opts {
		o(s)
	}
	if s.maxTxnOps < 8 {
		return nil, fmt.Errorf("max txn ops %d: use at least 8 (etcd's default is 128)", s.maxTxnOps)
	}
	if s.maxTxnBytes < 1024 {
		return nil, fmt.Errorf("max txn bytes %d: use at least 1024 (default %d)", s.maxTxnBytes, defaultMaxTxnBytes)
	}
	if s.pageSize < 1 {
		return nil, fmt.Errorf("page size %d: use at least 1 (default %d)", s.pageSize, defaultPageSize)
	}
	return s, nil
}

// Cluster is the cluster name the store works on.
func (s *Store) Cluster() string { return s.cluster }

// Prefix is the etcd key prefix of the cluster, "/reshard/<cluster>/".
func (s *Store) Prefix() string { return s.prefix }

// Endpoints are the etcd endpoints of the client, for messages.
func (s *Store) Endpoints() []string { return s.cli.Endpoints() }

// Close closes the etcd client if the store opened it (Open); otherwise it does nothing.
func (s *Store) Close() error {
	if s.closeFn != nil {
		return s.closeFn()
	}
	return nil
}

func (s *Store) key(rel string) string { return s.prefix + rel }

func (s *Store) rel(key []byte) string { return strings.TrimPrefix(string(key), s.prefix) }

func (s *Store) notFoundCatalog() error {
	return fmt.Errorf("no catalog for cluster %q in etcd at %s (run `reshard init -f cluster.yaml`, or pass --cluster): %w",
		s.cluster, strings.Join(s.Endpoints(), ","), ErrNotFound)
}

func badValue(key string, err error) error {
	return fmt.Errorf("catalog key %s holds a value that is not valid JSON for it (%v): fix it with etcdctl or restore an export", key, err)
}

func decodeMigration(b []byte, modRev int64) (*Migration, error) {
	var m Migration
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m.ModRev = modRev
	return &m, nil
}

// Clone returns a deep copy of the state, so that concurrent writers can each hold their own.
func (st *State) Clone() *State {
	c := *st
	c.Shards = make(map[string]Shard, len(st.Shards))
	for k, v := range st.Shards {
		c.Shards[k] = v
	}
	c.Ranges = append([]Range(nil), st.Ranges...)
	c.Migrations = make(map[string]Migration, len(st.Migrations))
	for k, v := range st.Migrations {
		c.Migrations[k] = v
	}
	c.ModRev = make(map[string]int64, len(st.ModRev))
	for k, v := range st.ModRev {
		c.ModRev[k] = v
	}
	c.Config.Tables = append([]string(nil), st.Config.Tables...)
	c.Config.Partitions = append([]PartitionSpec(nil), st.Config.Partitions...)
	c.Config.TableKeys = maps.Clone(st.Config.TableKeys)
	return &c
}

// rangeIndex finds the range starting exactly at lo.
func (st *State) rangeIndex(lo int64) (int, error) {
	i := sort.Search(len(st.Ranges), func(i int) bool { return st.Ranges[i].Range.Lo >= lo })
	if i == len(st.Ranges) || st.Ranges[i].Range.Lo != lo {
		return 0, fmt.Errorf("no range starts at %d (see `reshard catalog show`): %w", lo, ErrNotFound)
	}
	return i, nil
}

// write is one transaction: compares of what was read, operations, and the history events
// that record it (appended in the same transaction).
type write struct {
	cmps   []clientv3.Cmp
	ops    []clientv3.Op
	events []Event
	locks  []*Lock // held locks the write is guarded by (HeldBy)
}

func (w *write) put(s *Store, rel string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", rel, err)
	}
	w.ops = append(w.ops, clientv3.OpPut(s.key(rel), string(b)))
	return nil
}

// cmpRev requires key rel to still be at the mod revision it was read at (0: absent).
func (w *write) cmpRev(s *Store, rel string, rev int64) {
	w.cmps = append(w.cmps, clientv3.Compare(clientv3.ModRevision(s.key(rel)), "=", rev))
}

// commit runs the write and returns the revision it committed at.
//
// History sequence numbers come from the counter key "seq": the outer transaction compares
// what the caller read, and its Then holds a nested transaction that compares the counter
// and does everything (puts, history events, counter). When only the counter moved (another
// writer appended history in between) the nested Else returns the fresh counter and commit
// retries; when the caller's compares fail it is ErrConflict. So unrelated writers never
// fail each other, and seqs are dense and in commit order.
func (s *Store) commit(ctx context.Context, w *write) (int64, error) {
	return s.commitSeq(ctx, w, nil)
}

// seqRead is the history counter as read by the caller, with its mod revision.
type seqRead struct{ seq, rev int64 }

// commitSeq is commit with the history counter already read (nil: read it here). A
// stale counter costs one retry, never a wrong history. A write guarded by a lock that is
// gone fails with ErrLockLost rather than ErrConflict.
func (s *Store) commitSeq(ctx context.Context, w *write, pre *seqRead) (int64, error) {
	if err := w.checkLocks(); err != nil {
		return 0, err
	}
	rev, err := s.commitTxn(ctx, w, pre)
	if err != nil {
		return 0, s.whyConflict(ctx, w, err)
	}
	return rev, nil
}

func (s *Store) commitTxn(ctx context.Context, w *write, pre *seqRead) (int64, error) {
	if len(w.events) == 0 {
		return s.commitPlain(ctx, w)
	}
	if n := max(len(w.ops)+len(w.events)+1, len(w.cmps)+1); n > s.maxTxnOps {
		return 0, s.tooMany(n)
	}
	seqKey := s.key(keySeq)
	var seq, seqRev int64
	if pre != nil {
		seq, seqRev = pre.seq, pre.rev
	} else {
		gr, err := s.get(ctx, seqKey)
		if err != nil {
			return 0, s.wrapEtcd(err)
		}
		if seq, seqRev, err = parseSeq(gr.Kvs); err != nil {
			return 0, err
		}
	}
	for attempt := 0; attempt < 100; attempt++ {
		inner, firstKey, firstVal, err := s.withEvents(w, seq, seqRev)
		if err != nil {
			return 0, err
		}
		resp, unknown, err := s.sendTxn(ctx, w.cmps, []clientv3.Op{inner})
		if err != nil {
			return 0, err
		}
		in := resp.Responses
		if resp.Succeeded && in[0].GetResponseTxn().Succeeded {
			return resp.Header.Revision, nil
		}
		if unknown {
			// An earlier send of this very request may have applied: then the compares
			// (the caller's, or the counter's) fail because of it. Its history entry says.
			rev, applied, err := s.appliedEvent(ctx, firstKey, firstVal)
			if err != nil || applied {
				return rev, err
			}
		}
		if !resp.Succeeded {
			return 0, ErrConflict
		}
		if seq, seqRev, err = parseSeq(in[0].GetResponseTxn().Responses[0].GetResponseRange().Kvs); err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("history counter %s kept changing under heavy write load; retry: %w", seqKey, ErrConflict)
}

// commitPlain runs a write that appends no history.
func (s *Store) commitPlain(ctx context.Context, w *write) (int64, error) {
	if n := max(len(w.ops), len(w.cmps)); n > s.maxTxnOps {
		return 0, s.tooMany(n)
	}
	resp, unknown, err := s.sendTxn(ctx, w.cmps, w.ops)
	if err != nil {
		return 0, err
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	if unknown {
		rev, applied, err := s.appliedEffects(ctx, w.ops)
		if err != nil || applied {
			return rev, err
		}
	}
	return 0, ErrConflict
}

// withEvents is the nested transaction of a write with history events numbered from seq+1:
// it compares the counter (read at seqRev) and does the write's operations, appends the
// events and moves the counter; otherwise it reads the counter. It also returns the first
// event's key and value, which tell later whether this request applied (appliedEvent). The
// events' times are set once, so a re-send of the same numbering is byte for byte the same.
func (s *Store) withEvents(w *write, seq, seqRev int64) (clientv3.Op, string, []byte, error) {
	seqKey := s.key(keySeq)
	ops := append([]clientv3.Op(nil), w.ops...)
	now := s.now().UTC()
	var firstKey string
	var firstVal []byte
	for i, ev := range w.events {
		ev.Seq = seq + int64(i) + 1
		if ev.Time.IsZero() {
			ev.Time = now
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return clientv3.Op{}, "", nil, err
		}
		k := s.key(historyKey(ev.Seq))
		if i == 0 {
			firstKey, firstVal = k, b
		}
		ops = append(ops, clientv3.OpPut(k, string(b)))
	}
	last := seq + int64(len(w.events))
	ops = append(ops, clientv3.OpPut(seqKey, strconv.FormatInt(last, 10)))
	inner := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(seqKey), "=", seqRev)},
		ops,
		[]clientv3.Op{clientv3.OpGet(seqKey)},
	)
	return inner, firstKey, firstVal, nil
}

func parseSeq(kvs []*mvccKV) (int64, int64, error) {
	if len(kvs) == 0 {
		return 0, 0, nil
	}
	n, err := strconv.ParseInt(string(kvs[0].Value), 10, 64)
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("history counter %s holds %q, not a number: set it to the highest history seq with etcdctl", kvs[0].Key, kvs[0].Value)
	}
	return n, kvs[0].ModRevision, nil
}

func (s *Store) tooMany(n int) error {
	return fmt.Errorf("this change needs %d operations in one etcd transaction, more than the %d allowed: raise etcd's --max-txn-ops and pass the same limit to reshard, or change fewer ranges at once", n, s.maxTxnOps)
}

// wrapEtcd turns a transport failure into a message that names the endpoints.
func (s *Store) wrapEtcd(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || transient(err) {
		return fmt.Errorf("etcd unreachable at %s (check --etcd and that etcd runs): %w", strings.Join(s.Endpoints(), ","), err)
	}
	return err
}
