package demo

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
)

// TableFingerprint is one tenant's rows of one table: how many, and an order-independent
// hash of them (the sum of a 64-bit hash of each row, as a decimal, so a duplicated row
// changes it).
type TableFingerprint struct {
	Rows int64  `json:"rows"`
	Hash string `json:"hash"`
}

// Fingerprints are one shard's rows per tenant and table. A table where a tenant has no
// rows is absent.
type Fingerprints = FingerprintsOf[int64]

// FingerprintsOf are Fingerprints of tenants with keys of type K.
type FingerprintsOf[K TenantID] map[K]map[string]TableFingerprint

// Snapshot is the fingerprints of every shard, by shard name.
type Snapshot = SnapshotOf[int64]

// SnapshotOf is a Snapshot of tenants with keys of type K.
type SnapshotOf[K TenantID] map[string]FingerprintsOf[K]

// fingerprintSQL hashes whole rows per tenant like the cutover's verify does:
// hash_record_extended with each column type's own hash function over the row's columns
// in name order (so shards whose tables have another physical column order agree), summed
// as numeric (no overflow, duplicates count). The text form is the fallback for a type
// without a hash function. Table names are quoted as the rest of reshard quotes them.
func fingerprintSQL(table string, cols []string, text bool) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = "x." + pgx.Identifier{c}.Sanitize()
	}
	row := "ROW(" + strings.Join(q, ", ") + ")"
	h := "hash_record_extended(" + row + ", 0)"
	if text {
		h = "hashtextextended(" + row + "::text, 0)"
	}
	k := pgx.Identifier{Key}.Sanitize()
	return fmt.Sprintf(`SELECT x.%s, count(*), coalesce(sum(%s), 0)::text FROM %s x GROUP BY 1`, k, h, catalog.QuoteTable(table))
}

// Columns names, per table, the columns a fingerprint hashes; a table it does not name (or
// a nil Columns) is hashed over all its live columns.
type Columns map[string][]string

// TableColumns reads the live columns of each table on one shard, for a baseline's
// fingerprints: compared over these, rows whose table gained a column since (ALTER TABLE
// ... ADD COLUMN during a move) match as long as the columns they had are as they were.
// What the added column holds is for the caller to check on its own.
func TableColumns(ctx context.Context, db Querier, tables []string) (Columns, error) {
	out := Columns{}
	for _, table := range tables {
		cols, err := columns(ctx, db, table)
		if err != nil {
			return nil, fmt.Errorf("demo: columns of %s: %w", table, err)
		}
		out[table] = cols
	}
	return out, nil
}

// columns returns a table's live column names, sorted bytewise. table is a configured
// name (table or schema.table, exact), quoted by catalog.QuoteTable.
func columns(ctx context.Context, db Querier, table string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, catalog.QuoteTable(table))
	if err != nil {
		return nil, err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s not found", catalog.QuoteTable(table))
	}
	sort.Strings(cols)
	return cols, nil
}

// Fingerprint counts and hashes the rows of every tenant (by its tenant_id) in each of the
// tables on one shard. Take it before something moves or deletes data and compare it
// with CompareTenants afterwards: counts of a moved range alone miss the rows of a tenant
// that should have stayed.
func Fingerprint(ctx context.Context, db Querier, tables []string) (Fingerprints, error) {
	return FingerprintColumns(ctx, db, tables, nil)
}

// FingerprintColumns is Fingerprint over the columns cols names for each table (all live
// columns of a table it does not name).
func FingerprintColumns(ctx context.Context, db Querier, tables []string, cols Columns) (Fingerprints, error) {
	return FingerprintColumnsOf[int64](ctx, db, tables, cols)
}

// FingerprintOf is Fingerprint of tenants with keys of type K.
func FingerprintOf[K TenantID](ctx context.Context, db Querier, tables []string) (FingerprintsOf[K], error) {
	return FingerprintColumnsOf[K](ctx, db, tables, nil)
}

// FingerprintColumnsOf is FingerprintColumns of tenants with keys of type K.
func FingerprintColumnsOf[K TenantID](ctx context.Context, db Querier, tables []string, cols Columns) (FingerprintsOf[K], error) {
	out := FingerprintsOf[K]{}
	for _, table := range tables {
		cols, err := cols.of(ctx, db, table)
		if err == nil {
			err = fingerprintTable(ctx, db, table, cols, false, out)
		}
		if pgerr.Is(err, pgerr.UndefinedFunction) { // a type without a hash
			err = fingerprintTable(ctx, db, table, cols, true, out)
		}
		if err != nil {
			return nil, fmt.Errorf("demo: fingerprint of %s: %w", table, err)
		}
	}
	return out, nil
}

// of is the sorted columns to hash of table: the named ones, or its live columns.
func (c Columns) of(ctx context.Context, db Querier, table string) ([]string, error) {
	if named, ok := c[table]; ok {
		return uniqueSorted(append([]string(nil), named...)), nil
	}
	return columns(ctx, db, table)
}

func fingerprintTable[K TenantID](ctx context.Context, db Querier, table string, cols []string, text bool, out FingerprintsOf[K]) error {
	rows, err := db.Query(ctx, fingerprintSQL(table, cols, text))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var tenant K
		var f TableFingerprint
		if err := rows.Scan(&tenant, &f.Rows, &f.Hash); err != nil {
			return err
		}
		if out[tenant] == nil {
			out[tenant] = map[string]TableFingerprint{}
		}
		out[tenant][table] = f
	}
	return rows.Err()
}

// TakeSnapshot fingerprints the tables on every shard at once.
func TakeSnapshot(ctx context.Context, shards map[string]Querier, tables []string) (Snapshot, error) {
	return TakeSnapshotColumns(ctx, shards, tables, nil)
}

// TakeSnapshotColumns is TakeSnapshot over the columns cols names (FingerprintColumns).
func TakeSnapshotColumns(ctx context.Context, shards map[string]Querier, tables []string, cols Columns) (Snapshot, error) {
	return TakeSnapshotColumnsOf[int64](ctx, shards, tables, cols)
}

// TakeSnapshotOf is TakeSnapshot of tenants with keys of type K.
func TakeSnapshotOf[K TenantID](ctx context.Context, shards map[string]Querier, tables []string) (SnapshotOf[K], error) {
	return TakeSnapshotColumnsOf[K](ctx, shards, tables, nil)
}

// TakeSnapshotColumnsOf is TakeSnapshotColumns of tenants with keys of type K.
func TakeSnapshotColumnsOf[K TenantID](ctx context.Context, shards map[string]Querier, tables []string, cols Columns) (SnapshotOf[K], error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	snap := SnapshotOf[K]{}
	var errs []error
	for name, db := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := FingerprintColumnsOf[K](ctx, db, tables, cols)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("shard %s: %w", name, err))
				return
			}
			snap[name] = f
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return snap, nil
}

// Only returns the fingerprints of the tenants keep accepts (e.g. those outside a moved
// range, which must not change).
func (f FingerprintsOf[K]) Only(keep func(tenant K) bool) FingerprintsOf[K] {
	out := FingerprintsOf[K]{}
	for t, tables := range f {
		if keep(t) {
			out[t] = tables
		}
	}
	return out
}

// Tables returns the fingerprints of the named tables only.
func (f FingerprintsOf[K]) Tables(names ...string) FingerprintsOf[K] {
	out := FingerprintsOf[K]{}
	for t, tables := range f {
		for _, n := range names {
			if v, ok := tables[n]; ok {
				if out[t] == nil {
					out[t] = map[string]TableFingerprint{}
				}
				out[t][n] = v
			}
		}
	}
	return out
}

// Merge returns, per tenant, the fingerprint of the named tables' rows taken together
// (counts and hashes added), under the name into: what a partitioned table holds when
// those are its partitions.
func (f FingerprintsOf[K]) Merge(into string, names ...string) FingerprintsOf[K] {
	out := FingerprintsOf[K]{}
	for t, tables := range f {
		var rows int64
		sum := new(big.Int)
		for _, n := range names {
			v, ok := tables[n]
			if !ok {
				continue
			}
			h, ok := new(big.Int).SetString(v.Hash, 10)
			if !ok {
				h = big.NewInt(0) // not a sum of hashes: the merged hash will not match
			}
			rows += v.Rows
			sum.Add(sum, h)
		}
		if rows > 0 {
			out[t] = map[string]TableFingerprint{into: {Rows: rows, Hash: sum.String()}}
		}
	}
	return out
}

// Diff lists, bounded, where got differs from want (tenant, table, rows and whether the
// hash differs); nil when they are equal. what names the place in each line (a shard).
func (want FingerprintsOf[K]) Diff(what string, got FingerprintsOf[K]) error {
	var probs problems
	for _, t := range unionTenants(want, got) {
		for _, table := range unionTables(want[t], got[t]) {
			w, g := want[t][table], got[t][table]
			if w == g || w.Rows == 0 && g.Rows == 0 {
				continue
			}
			if w.Rows != g.Rows {
				probs.add("tenant %v: %s on %s: %d rows, want %d", t, table, what, g.Rows, w.Rows)
			} else {
				probs.add("tenant %v: %s on %s: %d rows as expected but their contents differ (hash)", t, table, what, g.Rows)
			}
		}
	}
	return probs.err("rows differ from their fingerprint")
}

func unionTenants[K TenantID](fs ...FingerprintsOf[K]) []K {
	seen := map[K]bool{}
	var out []K
	for _, f := range fs {
		for t := range f {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return keyLess(out[i], out[j]) })
	return out
}

// unionTables is the sorted union of the maps' table names.
func unionTables[V any](ms ...map[string]V) []string {
	var names []string
	for _, m := range ms {
		for t := range m {
			names = append(names, t)
		}
	}
	return uniqueSorted(names)
}

func uniqueSorted(names []string) []string {
	sort.Strings(names)
	out := names[:0]
	for i, n := range names {
		if i == 0 || n != names[i-1] {
			out = append(out, n)
		}
	}
	return out
}
