package mover

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// A chunk is one slice of one table's rows in the range: primary-key tuples in [lo, hi)
// (nil bound: unbounded). Chunks of a table tile its primary-key space, so whatever the
// boundaries, the chunks together copy every row of the range exactly once; sampling only
// decides how evenly the work is spread.
type chunk struct {
	src, dst *table
	index    int
	lo, hi   []string // primary-key values as text, in PK column order
	estBytes int64
}

const (
	chunkTargetBytes = 32 << 20 // one chunk per this much data...
	chunkMinBytes    = 2 << 20  // ...but split ranges above this so every worker gets some
	maxChunks        = 512
	samplePages      = 1000 // pages read by TABLESAMPLE to place boundaries
)

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings=on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pkTuple renders a tuple of PK values as a typed SQL expression.
func pkTuple(t *table, vals []string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = quoteLiteral(v) + "::" + t.column(t.PK[i]).Type
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func pkColumns(t *table) string {
	cols := make([]string, len(t.PK))
	for i, c := range t.PK {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	if len(cols) == 1 {
		return cols[0]
	}
	return "(" + strings.Join(cols, ", ") + ")"
}

// predicate is the chunk's filter on top of the range predicate ("" for a whole table).
func (c chunk) predicate() string {
	var parts []string
	if c.lo != nil {
		parts = append(parts, pkColumns(c.src)+" >= "+pkTuple(c.src, c.lo))
	}
	if c.hi != nil {
		parts = append(parts, pkColumns(c.src)+" < "+pkTuple(c.src, c.hi))
	}
	return strings.Join(parts, " AND ")
}

// planChunks splits one table's part of the range into chunks, placing the boundaries at
// quantiles of a TABLESAMPLE of the primary keys in the range.
func planChunks(ctx context.Context, q querier, src, dst *table, rangePred string, workers int) ([]chunk, int64, error) {
	pct := 100.0
	if pages := src.HeapBytes / 8192; pages > samplePages {
		pct = 100 * float64(samplePages) / float64(pages)
	}
	pkSel := make([]string, len(src.PK))
	pkOrd := make([]string, len(src.PK))
	pkText := make([]string, len(src.PK))
	for i, c := range src.PK {
		id := pgx.Identifier{c}.Sanitize()
		pkSel[i] = "t." + id
		pkOrd[i] = "s." + id
		pkText[i] = "s." + id + "::text"
	}
	sql := fmt.Sprintf(`SELECT s.reshard_n, %s FROM (
		SELECT count(*) OVER () AS reshard_n, %s AS reshard_in, %s FROM %s t TABLESAMPLE SYSTEM (%g) REPEATABLE (7)
	) s WHERE s.reshard_in ORDER BY %s`,
		strings.Join(pkText, ", "), rangePred, strings.Join(pkSel, ", "), src.Qualified(), pct, strings.Join(pkOrd, ", "))
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, 0, fmt.Errorf("source: sample %s to plan the copy: %w", src.Name, err)
	}
	var sampled int64
	var keys [][]string
	for rows.Next() {
		vals := make([]string, len(src.PK))
		dest := []any{&sampled}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("source: sample %s: %w", src.Name, err)
		}
		keys = append(keys, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("source: sample %s: %w", src.Name, err)
	}
	var est int64
	if sampled > 0 {
		est = int64(float64(src.SizeBytes) * float64(len(keys)) / float64(sampled))
	}
	bounds := boundaries(keys, chunkCount(est, workers))
	chunks := make([]chunk, len(bounds)+1)
	for i := range chunks {
		chunks[i] = chunk{src: src, dst: dst, index: i, estBytes: est / int64(len(chunks))}
		if i > 0 {
			chunks[i].lo = bounds[i-1]
		}
		if i < len(bounds) {
			chunks[i].hi = bounds[i]
		}
	}
	return chunks, est, nil
}

// chunkCount is how many chunks a table part of est bytes is cut into.
func chunkCount(est int64, workers int) int {
	n := int((est + chunkTargetBytes - 1) / chunkTargetBytes)
	if par := int((est + chunkMinBytes - 1) / chunkMinBytes); par > n {
		n = min(par, 2*workers)
		n = max(n, int((est+chunkTargetBytes-1)/chunkTargetBytes))
	}
	return max(1, min(n, maxChunks))
}

// boundaries picks n-1 distinct split keys at the quantiles of the sorted sample.
func boundaries(sorted [][]string, n int) [][]string {
	var out [][]string
	if len(sorted) == 0 {
		return nil
	}
	for i := 1; i < n; i++ {
		k := sorted[i*len(sorted)/n]
		if len(out) > 0 && equalTuple(out[len(out)-1], k) {
			continue
		}
		if len(out) == 0 && equalTuple(sorted[0], k) {
			continue // a boundary at the very first key makes an empty first chunk
		}
		out = append(out, k)
	}
	return out
}

func equalTuple(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
