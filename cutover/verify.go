package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
)

// ErrMismatch is returned when a range differs between source and target.
var ErrMismatch = errors.New("source and target differ")

// TableDigest is the row count and an order-independent hash of a range of one table.
type TableDigest struct {
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
	Hash  string `json:"hash"` // sum of 64-bit row hashes as a decimal, so duplicates count
}

// digestSQL hashes each row's text form and sums the hashes as numeric: a sum (unlike
// XOR) changes when a row is duplicated, and numeric cannot overflow. Both sides have
// the same column types (preflight checks it), so equal rows have equal text.
func digestSQL(table, key string, r catalog.KeyRange) string {
	t := pgx.Identifier{table}.Sanitize()
	return fmt.Sprintf(`SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0)::text FROM %s x WHERE %s`,
		t, r.SQL("x."+pgx.Identifier{key}.Sanitize()))
}

// Digest computes the digest of one table's range.
func Digest(ctx context.Context, db Querier, table, key string, r catalog.KeyRange) (TableDigest, error) {
	d := TableDigest{Table: table}
	if err := db.QueryRow(ctx, digestSQL(table, key, r)).Scan(&d.Rows, &d.Hash); err != nil {
		return d, fmt.Errorf("cutover: digest of %s %s: %w", table, r, err)
	}
	return d, nil
}

// Verification is the outcome of comparing a range on two shards.
type Verification struct {
	Source []TableDigest `json:"source"`
	Target []TableDigest `json:"target"`
	Rows   int64         `json:"rows"`
}

// Verify compares count and hash of every table's range on source and target (in
// parallel on the two shards). A difference is ErrMismatch naming each differing table.
func Verify(ctx context.Context, src, dst Querier, key string, tables []string, r catalog.KeyRange) (Verification, error) {
	v := Verification{Source: make([]TableDigest, len(tables)), Target: make([]TableDigest, len(tables))}
	var g errgroup.Group
	g.Go(func() error {
		for i, t := range tables {
			d, err := Digest(ctx, src, t, key, r)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			v.Source[i] = d
		}
		return nil
	})
	g.Go(func() error {
		for i, t := range tables {
			d, err := Digest(ctx, dst, t, key, r)
			if err != nil {
				return fmt.Errorf("target: %w", err)
			}
			v.Target[i] = d
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return v, err
	}
	var diffs []string
	for i := range tables {
		s, d := v.Source[i], v.Target[i]
		v.Rows += s.Rows
		if s.Rows != d.Rows || s.Hash != d.Hash {
			diffs = append(diffs, fmt.Sprintf("%s: source %d rows (hash %s), target %d rows (hash %s)", s.Table, s.Rows, s.Hash, d.Rows, d.Hash))
		}
	}
	if len(diffs) > 0 {
		return v, fmt.Errorf("%w for %s: %s", ErrMismatch, r, strings.Join(diffs, "; "))
	}
	return v, nil
}
