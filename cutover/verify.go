package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
)

// ErrMismatch is returned when a range differs between source and target.
var ErrMismatch = errors.New("source and target differ")

// TableDigest is the row count and an order-independent hash of a range of one table.
type TableDigest struct {
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
	Hash  string `json:"hash"`                // sum of 64-bit row hashes as a decimal, so duplicates count
	Text  bool   `json:"text_hash,omitempty"` // hashed through the row's text form
}

// digestSQL sums a 64-bit hash of each row as numeric: a sum (unlike XOR) changes when a
// row is duplicated, and numeric cannot overflow. hash_record_extended hashes each column
// with its type's own hash function, three times faster than hashing the row's text, which
// matters because verify runs inside the write-unavailability window. Both sides have the
// same column types (preflight checks it), so equal rows hash equally.
func digestSQL(table, key string, r catalog.KeyRange, text bool) string {
	t := pgx.Identifier{table}.Sanitize()
	h := "hash_record_extended(x, 0)"
	if text {
		h = "hashtextextended(x::text, 0)"
	}
	return fmt.Sprintf(`SELECT count(*), coalesce(sum(%s), 0)::text FROM %s x WHERE %s`,
		h, t, r.SQL("x."+pgx.Identifier{key}.Sanitize()))
}

// Digest computes the digest of one table's range. A table with a column type that has no
// hash function (json, point, ...) is hashed through the row's text form instead.
func Digest(ctx context.Context, db Querier, table, key string, r catalog.KeyRange) (TableDigest, error) {
	d := TableDigest{Table: table}
	err := db.QueryRow(ctx, digestSQL(table, key, r, false)).Scan(&d.Rows, &d.Hash)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42883" { // undefined_function: no hash for a type
		d.Text = true
		err = db.QueryRow(ctx, digestSQL(table, key, r, true)).Scan(&d.Rows, &d.Hash)
	}
	if err != nil {
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
