package cutover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
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

// Columns are each table's column names, sorted bytewise, that the verify hashes rows by.
type Columns map[string][]string

// columnsSQL reads the live columns of the tables in one round trip.
const columnsSQL = `
SELECT t.name, a.attname::text
FROM unnest($1::text[], $2::text[]) AS t(name, quoted)
JOIN pg_attribute a ON a.attrelid = to_regclass(t.quoted) AND a.attnum > 0 AND NOT a.attisdropped`

// ReadColumns reads the tables' columns on one shard (the source: preflight made sure the
// target has the same names and types). Rows are hashed as a row of these columns in name
// order, not as the table's row: a table's physical column order differs between shards
// when its columns were added in another order or one was dropped on one side only, and
// preflight, which compares columns by name, lets such tables move.
func ReadColumns(ctx context.Context, db Querier, tables []string) (Columns, error) {
	rows, err := db.Query(ctx, columnsSQL, tables, catalog.QuoteTables(tables))
	if err != nil {
		return nil, fmt.Errorf("cutover: read the columns of %s: %w", quoteList(tables), err)
	}
	defer rows.Close()
	cols := Columns{}
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			return nil, fmt.Errorf("cutover: read the columns of %s: %w", quoteList(tables), err)
		}
		cols[t] = append(cols[t], c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cutover: read the columns of %s: %w", quoteList(tables), err)
	}
	for _, t := range tables {
		if len(cols[t]) == 0 {
			return nil, fmt.Errorf("cutover: table %s not found: check the cluster's table list", catalog.QuoteTable(t))
		}
		sort.Strings(cols[t])
	}
	return cols, nil
}

// rowExpr is the row of table alias x that the verify hashes: its columns in name order.
func rowExpr(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = "x." + pgx.Identifier{c}.Sanitize()
	}
	return "ROW(" + strings.Join(q, ", ") + ")"
}

// digestSQL sums a 64-bit hash of each row as numeric: a sum (unlike XOR) changes when a
// row is duplicated, and numeric cannot overflow. hash_record_extended hashes each column
// with its type's own hash function, three times faster than hashing the row's text, which
// matters because verify runs inside the write-unavailability window. Both sides have the
// same column names and types (preflight checks it) and the row lists them in name order,
// so equal rows hash equally whatever the tables' physical column order.
func digestSQL(table string, keys catalog.Keyspace, cols []string, r catalog.KeyRange, text bool) string {
	t := catalog.QuoteTable(table)
	h := "hash_record_extended(" + rowExpr(cols) + ", 0)"
	if text {
		h = "hashtextextended(" + rowExpr(cols) + "::text, 0)"
	}
	return fmt.Sprintf(`SELECT count(*) AS n, coalesce(sum(%s), 0)::text AS h FROM %s x WHERE %s`,
		h, t, keys.Pred(table, "x", r))
}

// textStyleSQL makes the session write values as text the same way on every server, for
// the text hash: dates, times, intervals, floats and bytea are written as the session's
// settings say, and the two shards' defaults may differ. It stays set on the connection,
// which is reshard's own and only reads values in binary otherwise.
const textStyleSQL = `SELECT set_config('DateStyle', 'ISO', false), set_config('IntervalStyle', 'postgres', false),
	set_config('extra_float_digits', '3', false), set_config('TimeZone', 'UTC', false), set_config('bytea_output', 'hex', false)`

// Digest computes the digest of one table's range, hashing its columns cols (ReadColumns).
// A table with a column type that has no hash function (json, point, ...) is hashed
// through the row's text form instead, written in fixed styles (textStyleSQL).
func Digest(ctx context.Context, db Querier, table string, keys catalog.Keyspace, cols []string, r catalog.KeyRange) (TableDigest, error) {
	d := TableDigest{Table: table}
	err := db.QueryRow(ctx, digestSQL(table, keys, cols, r, false)).Scan(&d.Rows, &d.Hash)
	if pgerr.Is(err, pgerr.UndefinedFunction) { // no hash function for a column's type
		d.Text = true
		if _, err = db.Exec(ctx, textStyleSQL); err == nil {
			err = db.QueryRow(ctx, digestSQL(table, keys, cols, r, true)).Scan(&d.Rows, &d.Hash)
		}
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
// parallel on the two shards), hashing the source's columns by name. A difference is
// ErrMismatch naming each differing table.
func Verify(ctx context.Context, src, dst Querier, keys catalog.Keyspace, tables []string, r catalog.KeyRange) (Verification, error) {
	cols, err := ReadColumns(ctx, src, tables)
	if err != nil {
		return Verification{}, fmt.Errorf("source: %w", err)
	}
	var s, d []TableDigest
	var g errgroup.Group
	g.Go(func() (err error) {
		s, err = digests(ctx, []Querier{src}, keys, tables, cols, r)
		if err != nil {
			err = fmt.Errorf("source: %w", err)
		}
		return err
	})
	g.Go(func() (err error) {
		d, err = digests(ctx, []Querier{dst}, keys, tables, cols, r)
		if err != nil {
			err = fmt.Errorf("target: %w", err)
		}
		return err
	})
	if err := g.Wait(); err != nil {
		return Verification{Source: s, Target: d}, err
	}
	return compare(r, s, d)
}

// digests computes the digest of every table's range on one shard. The tables are shared
// out among the connections, which hash at once, each its share in one statement (one
// round trip). A failure does not cancel the others: cancelling a query would break its
// connection, which the caller still needs.
func digests(ctx context.Context, conns []Querier, keys catalog.Keyspace, tables []string, cols Columns, r catalog.KeyRange) ([]TableDigest, error) {
	out := make([]TableDigest, len(tables))
	n := min(len(conns), len(tables))
	var g errgroup.Group
	for lane := range n {
		g.Go(func() error {
			var idx []int
			for i := lane; i < len(tables); i += n {
				idx = append(idx, i)
			}
			ds, err := digestGroup(ctx, conns[lane], keys, tables, cols, idx, r)
			for j, i := range idx {
				out[i] = ds[j]
			}
			return err
		})
	}
	return out, g.Wait()
}

// digestGroup computes the digests of tables[idx] in one statement (a UNION ALL of each
// table's aggregate). When a table has a column type without a hash function, it falls
// back to one statement per table, where Digest hashes that table through text.
func digestGroup(ctx context.Context, db Querier, keys catalog.Keyspace, tables []string, cols Columns, idx []int, r catalog.KeyRange) ([]TableDigest, error) {
	out := make([]TableDigest, len(idx))
	if len(idx) == 1 {
		d, err := Digest(ctx, db, tables[idx[0]], keys, cols[tables[idx[0]]], r)
		out[0] = d
		return out, err
	}
	parts := make([]string, len(idx))
	for j, i := range idx {
		out[j].Table = tables[i]
		parts[j] = fmt.Sprintf("SELECT %d AS j, n, h FROM (%s) d%d", j, digestSQL(tables[i], keys, cols[tables[i]], r, false), j)
	}
	rows, err := db.Query(ctx, strings.Join(parts, "\nUNION ALL\n"))
	if err == nil {
		for rows.Next() {
			var j int
			var d TableDigest
			if err = rows.Scan(&j, &d.Rows, &d.Hash); err != nil {
				break
			}
			out[j].Rows, out[j].Hash = d.Rows, d.Hash
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if pgerr.Is(err, pgerr.UndefinedFunction) { // no hash function for a column's type
		for j, i := range idx {
			if out[j], err = Digest(ctx, db, tables[i], keys, cols[tables[i]], r); err != nil {
				return out, err
			}
		}
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("cutover: digest of %s %s: %w", quoteList(pick(tables, idx)), r, err)
	}
	return out, nil
}

// warmDigests runs, on each connection, a statement over the same tables as its share of
// digests but reading one row of each: a new backend's first statement on a set of tables
// pays for loading their catalog entries and statistics (several times the cost of hashing
// a small range), and hashing one row looks up the columns' hash functions. It is run
// before the freeze; errors are ignored (the verify reports them).
func warmDigests(ctx context.Context, conns []Querier, keys catalog.Keyspace, tables []string, cols Columns, r catalog.KeyRange) {
	n := min(len(conns), len(tables))
	var wg sync.WaitGroup
	for lane := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var parts []string
			for i := lane; i < len(tables); i += n {
				parts = append(parts, fmt.Sprintf("(SELECT hash_record_extended(%s, 0) FROM %s x WHERE %s LIMIT 1)",
					rowExpr(cols[tables[i]]), catalog.QuoteTable(tables[i]), keys.Pred(tables[i], "x", r)))
			}
			_, _ = conns[lane].Exec(ctx, strings.Join(parts, " UNION ALL "))
		}()
	}
	wg.Wait()
}

func pick(ss []string, idx []int) []string {
	out := make([]string, len(idx))
	for j, i := range idx {
		out[j] = ss[i]
	}
	return out
}

// compare checks the digests of the same tables on the two shards.
func compare(r catalog.KeyRange, src, dst []TableDigest) (Verification, error) {
	v := Verification{Source: src, Target: dst}
	var diffs []string
	for i := range src {
		s, d := src[i], dst[i]
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

// extraConns opens up to n more connections with the settings of c, when c is a
// *pgx.Conn, in parallel, for the verify to hash several tables at once on a shard. It is
// called before the freeze, so connecting costs the window nothing. One that fails to
// open is left out: the verify runs on fewer.
func extraConns(ctx context.Context, c Querier, n int) []*pgx.Conn {
	cc, ok := c.(interface{ Config() *pgx.ConnConfig })
	if !ok || n <= 0 {
		return nil
	}
	conns := make([]*pgx.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if nc, err := pgx.ConnectConfig(ctx, cc.Config().Copy()); err == nil {
				conns[i] = nc
			}
		}()
	}
	wg.Wait()
	out := conns[:0]
	for _, nc := range conns {
		if nc != nil {
			out = append(out, nc)
		}
	}
	return out
}
