package pgmeta

import (
	"cmp"
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// TableSize is one table's size on disk (heap, indexes and TOAST of all its partitions)
// and row count.
type TableSize struct {
	Bytes   int64
	Rows    int64
	Sampled bool // rows and per-tenant numbers were estimated from a TABLESAMPLE
}

// TenantSize is one tenant's share of the sharded tables.
type TenantSize struct {
	Tenant string // the tenant key as text under hash distribution (the map's key is its hash)
	Bytes  int64
	Rows   int64
}

// Sizes is what Measure found on one shard.
type Sizes struct {
	Tables  map[string]TableSize
	Tenants map[int64]TenantSize
}

// MeasureOptions tune Measure.
type MeasureOptions struct {
	// SampleAboveRows: a table whose planner estimate exceeds this many rows is measured
	// from a TABLESAMPLE SYSTEM of about SampleRows rows instead of a full scan (0: 5e6).
	SampleAboveRows int64
	// SampleRows is the target sample size (0: 1e6).
	SampleRows int64
}

// Measure sizes the sharded tables and every tenant's share of them.
//
// A tenant's bytes in a table are its share of the table's row bytes (the sum of
// pg_column_size of its rows) applied to the table's total size on disk, so the tenants of
// a shard add up to the shard's table bytes, indexes and TOAST included. Tables above
// SampleAboveRows rows are sampled (TABLESAMPLE SYSTEM, counts scaled up): cheaper, with
// small tenants possibly missed; TableSize.Sampled says so.
func Measure(ctx context.Context, q Querier, keys catalog.Keyspace, tables []string, opts MeasureOptions) (*Sizes, error) {
	if opts.SampleAboveRows <= 0 {
		opts.SampleAboveRows = 5_000_000
	}
	if opts.SampleRows <= 0 {
		opts.SampleRows = 1_000_000
	}
	out := &Sizes{Tables: map[string]TableSize{}, Tenants: map[int64]TenantSize{}}
	for _, t := range tables {
		qt := catalog.QuoteTable(t)
		var bytes int64
		var estimate float64
		err := q.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0)::bigint,
			coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE p.isleaf), 0)::float8
			FROM (`+treeSQL("$1::regclass")+`) p JOIN pg_class c ON c.oid = p.relid`, qt).Scan(&bytes, &estimate)
		if err != nil {
			return nil, fmt.Errorf("size of table %s: %w", t, err)
		}
		ts := TableSize{Bytes: bytes}
		scale := 1.0
		from := qt + " t"
		if estimate > float64(opts.SampleAboveRows) {
			pct := math.Min(100, 100*float64(opts.SampleRows)/estimate)
			from = fmt.Sprintf("%s t TABLESAMPLE SYSTEM (%g)", qt, pct)
			scale = 100 / pct
			ts.Sampled = true
		}
		// Tenants are counted by their position on the key line (the key, or its hash).
		rows, err := q.Query(ctx, fmt.Sprintf(`SELECT %s, count(*), sum(pg_column_size(t.*))::bigint, %s FROM %s WHERE t.%[4]s IS NOT NULL GROUP BY 1`,
			keys.Expr(t, "t"), tenantName(keys, t), from, pgx.Identifier{keys.Column(t)}.Sanitize()))
		if err != nil {
			return nil, fmt.Errorf("per-tenant size of table %s: %w", t, err)
		}
		type agg struct {
			rows, rowBytes int64
			name           string
		}
		per := map[int64]agg{}
		var totalRowBytes, totalRows int64
		var k, n, b int64
		var name string
		_, err = pgx.ForEachRow(rows, []any{&k, &n, &b, &name}, func() error {
			per[k] = agg{n, b, name}
			totalRowBytes += b
			totalRows += n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("per-tenant size of table %s: %w", t, err)
		}
		ts.Rows = int64(math.Round(float64(totalRows) * scale))
		for k, a := range per {
			cur := out.Tenants[k]
			cur.Tenant = cmp.Or(cur.Tenant, a.name)
			cur.Rows += int64(math.Round(float64(a.rows) * scale))
			if totalRowBytes > 0 {
				cur.Bytes += int64(math.Round(float64(bytes) * float64(a.rowBytes) / float64(totalRowBytes)))
			}
			out.Tenants[k] = cur
		}
		out.Tables[t] = ts
	}
	return out, nil
}

// tenantName is the SQL aggregate naming the tenant at a position: under hash the key as
// text (the smallest, should two keys share a hash), under range nothing, the position
// being the key.
func tenantName(keys catalog.Keyspace, table string) string {
	if !keys.Hashed() {
		return "''::text"
	}
	return "min(t." + pgx.Identifier{keys.Column(table)}.Sanitize() + `::text COLLATE "C")`
}
