package pgmeta

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/pgerr"

	"github.com/reshard/reshard/catalog"
)

// WriteSample is the row changes (inserts, updates, deletes) per tenant committed during a
// sample, in the sharded tables and their partitions.
type WriteSample struct {
	Writes map[int64]int64
	// Tenants names, under hash distribution, each tenant of Writes by its key as text.
	Tenants map[int64]string
	Elapsed time.Duration
	Slot    string // the temporary slot used (already dropped)
}

// SlotPrefix names the temporary slots of write sampling.
const SlotPrefix = "reshard_stats_"

// changesBatch bounds one pg_logical_slot_get_changes call, so memory stays flat however
// busy the shard is.
const changesBatch = 10000

// SampleWrites counts, for duration d, the row changes per tenant committed on the shard,
// read from the WAL through a temporary logical slot (test_decoding) on conn. conn must not
// be used for anything else meanwhile. The slot is always dropped before SampleWrites
// returns, even on error or cancellation; should reshard die instead, the server drops it
// with the session because it is temporary.
//
// Creating a logical slot waits until the transactions running at that moment end, so a
// long-running transaction on the shard delays the start (bounded by ctx).
func SampleWrites(ctx context.Context, conn *pgx.Conn, keys catalog.Keyspace, tables []string, d time.Duration) (ws *WriteSample, err error) {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	slot := SlotPrefix + hex.EncodeToString(rnd[:])
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding', true)`, slot); err != nil {
		return nil, fmt.Errorf("create temporary slot %s for write sampling: %w%s", slot, err, slotHint(err))
	}
	defer func() {
		if derr := dropSlot(conn, slot); derr != nil && err == nil {
			err = derr
		}
	}()
	start := time.Now()
	roots, err := partitionRoots(ctx, conn, tables)
	if err != nil {
		return nil, err
	}
	p := newChangeParser(keys, roots, map[int64]int64{})
	ws = &WriteSample{Writes: p.writes, Tenants: p.names, Slot: slot}
	deadline := start.Add(d)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		// Drain what is there so the slot does not hold WAL for the whole sample.
		if err := drain(ctx, conn, slot, "", p); err != nil {
			return nil, err
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	// Everything committed before the end of the sample, and nothing after.
	var end string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		return nil, fmt.Errorf("read WAL position: %w", err)
	}
	ws.Elapsed = time.Since(start)
	if err := drain(ctx, conn, slot, end, p); err != nil {
		return nil, err
	}
	if err := p.lookupUnknown(ctx, conn); err != nil {
		return nil, err
	}
	return ws, nil
}

func slotHint(err error) string {
	switch pgerr.Code(err) {
	case pgerr.ConfigurationLimitExceeded:
		return " (all replication slots are in use: raise max_replication_slots, or sample later)"
	case pgerr.ObjectNotInPrerequisiteState:
		return " (wal_level must be logical)"
	}
	return ""
}

// dropSlot drops the slot with a context of its own, so a cancelled sample still cleans
// up. If the connection is gone (a cancelled query closes it) the server has already
// dropped the temporary slot with the session.
func dropSlot(conn *pgx.Conn, slot string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if conn.IsClosed() {
		return nil
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		if conn.IsClosed() {
			return nil
		}
		return fmt.Errorf("drop temporary slot %s (drop it with SELECT pg_drop_replication_slot('%s') if it is still there): %w", slot, slot, err)
	}
	return nil
}

// drain consumes the slot's changes (up to LSN upto if given) in bounded batches.
func drain(ctx context.Context, conn *pgx.Conn, slot, upto string, p *changeParser) error {
	for {
		var rows pgx.Rows
		var err error
		if upto == "" {
			rows, err = conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_changes($1, NULL, $2, 'include-xids', '0', 'skip-empty-xacts', '1')`, slot, changesBatch)
		} else {
			rows, err = conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_changes($1, $3::pg_lsn, $2, 'include-xids', '0', 'skip-empty-xacts', '1')`, slot, changesBatch, upto)
		}
		if err != nil {
			return fmt.Errorf("read changes from slot %s: %w", slot, err)
		}
		var line string
		n, err := pgx.ForEachRow(rows, []any{&line}, func() error {
			p.line(line)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read changes from slot %s: %w", slot, err)
		}
		if n.RowsAffected() < changesBatch {
			return nil
		}
	}
}

// partitionRoots maps every relation of the sharded tables (partitions included), as
// test_decoding names it ("schema.table"), to its sharded table.
func partitionRoots(ctx context.Context, q Querier, tables []string) (map[string]string, error) {
	roots := map[string]string{}
	for _, t := range tables {
		names, err := Strings(ctx, q, `SELECT format('%I.%I', n.nspname, c.relname) FROM (`+treeSQL("$1::regclass")+`) p
			JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace`, catalog.QuoteTable(t))
		if err != nil {
			return nil, fmt.Errorf("partitions of %s: %w", t, err)
		}
		for _, n := range names {
			roots[n] = t
		}
	}
	return roots, nil
}

// changeParser counts test_decoding lines per tenant:
//
//	table public.orders: INSERT: id[bigint]:1 tenant_id[bigint]:42 note[text]:'x y'
//	table public.orders: UPDATE: old-key: tenant_id[bigint]:1 id[bigint]:2 new-tuple: ...
//	table public.orders: DELETE: tenant_id[bigint]:42 id[bigint]:1
type changeParser struct {
	keys   catalog.Keyspace
	roots  map[string]string
	writes map[int64]int64
	// names holds, under hash distribution, each counted tenant's key as text.
	names map[int64]string
	// unknown holds counts for relations not known when the sample started (a partition
	// created meanwhile); they are attributed once their root is looked up.
	unknown map[string]map[int64]int64
}

func newChangeParser(keys catalog.Keyspace, roots map[string]string, writes map[int64]int64) *changeParser {
	return &changeParser{keys: keys, roots: roots, writes: writes, names: map[int64]string{}}
}

func (p *changeParser) line(s string) {
	rest, ok := strings.CutPrefix(s, "table ")
	if !ok {
		return // BEGIN, COMMIT, messages
	}
	rel, rest, ok := strings.Cut(rest, ": ")
	if !ok {
		return
	}
	op, tuple, _ := strings.Cut(rest, ": ")
	switch op {
	case "INSERT", "UPDATE", "DELETE":
	default:
		return // TRUNCATE: no per-row keys
	}
	if _, t, ok := strings.Cut(tuple, "new-tuple: "); ok {
		tuple = t
	}
	// A partition created during the sample is not in roots yet: its table's key column
	// is taken to be the default one.
	root, known := p.roots[rel]
	v, ok := keyValue(tuple, p.keys.Column(root))
	if !ok {
		return
	}
	k, name, err := p.position(v)
	if err != nil {
		return
	}
	if name != "" && p.names[k] == "" {
		p.names[k] = name
	}
	if known {
		p.writes[k]++
		return
	}
	if p.unknown == nil {
		p.unknown = map[string]map[int64]int64{}
	}
	if p.unknown[rel] == nil {
		p.unknown[rel] = map[int64]int64{}
	}
	p.unknown[rel][k]++
}

// position is where the key written v falls, and under hash the key's name (its text form).
func (p *changeParser) position(v string) (int64, string, error) {
	key, err := catalog.ParseKey(p.keys.KeyType(), v)
	if err != nil {
		return 0, "", err
	}
	k, err := p.keys.Position(key)
	if err != nil || !p.keys.Hashed() {
		return k, "", err
	}
	return k, key.String(), nil
}

// lookupUnknown counts changes of relations that turned out to be partitions of a
// sharded table.
func (p *changeParser) lookupUnknown(ctx context.Context, q Querier) error {
	for rel, counts := range p.unknown {
		var root string
		err := q.QueryRow(ctx, `SELECT coalesce((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = pg_partition_root(to_regclass($1))), '')`, rel).Scan(&root)
		if err != nil {
			return fmt.Errorf("look up %s: %w", rel, err)
		}
		if _, ok := p.roots[root]; !ok {
			continue
		}
		for k, n := range counts {
			p.writes[k] += n
		}
	}
	return nil
}

// keyValue finds column key's value in a test_decoding tuple: a sequence of
// name[type]:value, where a value is 'quoted' (with ” inside), or runs to the next space.
func keyValue(tuple, key string) (string, bool) {
	s := tuple
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		lb := strings.IndexByte(s, '[')
		if lb < 0 {
			return "", false
		}
		name := strings.Trim(s[:lb], `"`)
		te := strings.Index(s[lb:], "]:")
		if te < 0 {
			return "", false
		}
		s = s[lb+te+2:]
		var val string
		if strings.HasPrefix(s, "'") {
			i := 1
			for i < len(s) {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			val, s = s[:min(i+1, len(s))], s[min(i+1, len(s)):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		if name == key {
			if val == "null" {
				return "", false
			}
			if strings.HasPrefix(val, "'") {
				val = strings.ReplaceAll(strings.TrimSuffix(val[1:], "'"), "''", "'")
			}
			return val, true
		}
	}
	return "", false
}
