package cutover

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
)

// The online verification compares a range on two shards from two snapshots that hold
// the same source transactions, while writes go on: per table, chunk by chunk (key
// sub-ranges of the primary key, in key order), and narrows a differing chunk down to the
// primary keys that differ.

// OnlineOptions tune an online verification.
type OnlineOptions struct {
	// ChunkRows is the rows of a chunk (default 10,000): the source is read in primary
	// key order, this many rows at a time; the target hashes the same key sub-range.
	ChunkRows int
	// ReportKeys is how many differing keys the result lists (default 100).
	ReportKeys int
	// DiffOut, if set, gets every differing key, one line each.
	DiffOut io.Writer
	// Progress, if set, is called after each chunk.
	Progress func(OnlineProgress)
	// Expect is the rows expected (for the progress's ETA); 0: unknown.
	Expect int64
}

func (o *OnlineOptions) defaults() {
	if o.ChunkRows <= 0 {
		o.ChunkRows = 10_000
	}
	if o.ReportKeys <= 0 {
		o.ReportKeys = 100
	}
}

// OnlineProgress is how far an online verification is.
type OnlineProgress struct {
	Table   string        `json:"table"`
	Rows    int64         `json:"rows"` // source rows hashed so far, all tables
	Chunks  int           `json:"chunks"`
	Expect  int64         `json:"expect,omitempty"`
	Elapsed time.Duration `json:"elapsed"`
	ETA     time.Duration `json:"eta,omitempty"` // 0: unknown
}

// RowDiff is one row that differs between the two sides, by its key.
type RowDiff struct {
	Table   string   `json:"table"`
	Columns []string `json:"columns"` // the key columns
	Key     []string `json:"key"`     // their values, as text
	Problem string   `json:"problem"` // "missing on target", "missing on source", "differs"
}

func (d RowDiff) String() string {
	return fmt.Sprintf("%s (%s)=(%s): %s", d.Table, strings.Join(d.Columns, ", "), strings.Join(d.Key, ", "), d.Problem)
}

// ChunkedTable is one table's part of an online verification.
type ChunkedTable struct {
	Table      string `json:"table"`
	Rows       int64  `json:"rows"` // on the source
	TargetRows int64  `json:"target_rows"`
	Chunks     int    `json:"chunks"`
	DiffChunks int    `json:"diff_chunks"`
}

// OnlineVerification is the outcome of an online verification.
type OnlineVerification struct {
	// LSN is the source position both snapshots hold exactly (0 between two shards,
	// whose snapshots are independent).
	LSN       pglogrepl.LSN  `json:"lsn,omitempty"`
	Tables    []ChunkedTable `json:"tables"`
	Rows      int64          `json:"rows"`
	Chunks    int            `json:"chunks"`
	Diffs     []RowDiff      `json:"diffs,omitempty"` // at most ReportKeys
	DiffCount int            `json:"diff_count"`
	Took      time.Duration  `json:"took"`
}

// keyColumns are a table's primary key columns (in index order) and their types.
type keyColumns struct {
	cols, types []string
}

// pkSQL reads the primary key columns of the tables, in index order, with their types.
const pkSQL = `
SELECT t.name, a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, quoted, o)
JOIN pg_index i ON i.indrelid = to_regclass(t.quoted) AND i.indisprimary
JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
ORDER BY t.o, k.n`

func readPrimaryKeys(ctx context.Context, db Querier, tables []string) (map[string]keyColumns, error) {
	rows, err := db.Query(ctx, pkSQL, tables, catalog.QuoteTables(tables))
	if err != nil {
		return nil, fmt.Errorf("cutover: read the primary keys of %s: %w", quoteList(tables), err)
	}
	defer rows.Close()
	out := map[string]keyColumns{}
	for rows.Next() {
		var t, c, typ string
		if err := rows.Scan(&t, &c, &typ); err != nil {
			return nil, fmt.Errorf("cutover: read the primary keys of %s: %w", quoteList(tables), err)
		}
		k := out[t]
		k.cols, k.types = append(k.cols, c), append(k.types, typ)
		out[t] = k
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cutover: read the primary keys of %s: %w", quoteList(tables), err)
	}
	for _, t := range tables {
		if len(out[t].cols) == 0 {
			return nil, fmt.Errorf("cutover: table %s has no primary key: give it one (the verify compares rows by it)", pgx.Identifier{t}.Sanitize())
		}
	}
	return out, nil
}

// typesSQL reads the types of every column of the tables.
const typesSQL = `
SELECT t.name, a.attname::text, format_type(a.atttypid, a.atttypmod)
FROM unnest($1::text[], $2::text[]) AS t(name, quoted)
JOIN pg_attribute a ON a.attrelid = to_regclass(t.quoted) AND a.attnum > 0 AND NOT a.attisdropped`

// columnTypes are the types of the tables' columns, by table and column.
type columnTypes map[string]map[string]string

func readColumnTypes(ctx context.Context, db Querier, tables []string) (columnTypes, error) {
	rows, err := db.Query(ctx, typesSQL, tables, catalog.QuoteTables(tables))
	if err != nil {
		return nil, fmt.Errorf("cutover: read the column types of %s: %w", quoteList(tables), err)
	}
	defer rows.Close()
	out := columnTypes{}
	for rows.Next() {
		var t, c, typ string
		if err := rows.Scan(&t, &c, &typ); err != nil {
			return nil, fmt.Errorf("cutover: read the column types of %s: %w", quoteList(tables), err)
		}
		if out[t] == nil {
			out[t] = map[string]string{}
		}
		out[t][c] = typ
	}
	return out, rows.Err()
}

// hashModes says, per table, whether its rows are hashed through their text form: a
// column type without a hash function (json, point, ...) makes hash_record_extended fail
// at run time, which would abort a snapshot's transaction, so it is probed before.
func hashModes(ctx context.Context, db Querier, keys catalog.Keyspace, tables []string, cols Columns, r catalog.KeyRange) (map[string]bool, error) {
	text := map[string]bool{}
	for _, t := range tables {
		q := fmt.Sprintf("SELECT hash_record_extended(%s, 0) FROM %s x WHERE %s LIMIT 1",
			rowExpr(cols[t]), catalog.QuoteTable(t), keys.Pred(t, "x", r))
		_, err := db.Exec(ctx, q)
		switch {
		case pgerr.Is(err, pgerr.UndefinedFunction): // no hash function for a column's type
			text[t] = true
		case err != nil:
			return nil, fmt.Errorf("cutover: hash a row of %s: %w", t, err)
		}
	}
	return text, nil
}

// snapshotSide is one side of an online verification: a transaction holding its snapshot.
type snapshotSide struct {
	name string // "source" or "target"
	tx   pgx.Tx
}

// onlinePlan is what both sides hash: per table its columns, key and hash mode.
type onlinePlan struct {
	keys   catalog.Keyspace // each table's key column and how it maps onto the key line
	r      catalog.KeyRange
	tables []string
	cols   Columns
	pks    map[string]keyColumns
	text   map[string]bool
}

func (p *onlinePlan) hashExpr(t string) string {
	if p.text[t] {
		return "hashtextextended(" + rowExpr(p.cols[t]) + "::text, 0)"
	}
	return "hash_record_extended(" + rowExpr(p.cols[t]) + ", 0)"
}

func (p *onlinePlan) rangeSQL(t string) string { return p.keys.Pred(t, "x", p.r) }

// keyList renders columns prefixed "x.", with a suffix (" DESC", "::text").
func keyList(cols []string, suffix string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = "x." + pgx.Identifier{c}.Sanitize() + suffix
	}
	return strings.Join(q, ", ")
}

// params renders typed parameters $first.. for the types.
func params(types []string, first int) string {
	q := make([]string, len(types))
	for i, t := range types {
		q[i] = fmt.Sprintf("$%d::%s", first+i, t)
	}
	return strings.Join(q, ", ")
}

// boundsSQL limits rows to the keys after lo (exclusive) and up to hi (inclusive); nil
// is unbounded. Row comparisons use the primary key's index.
func boundsSQL(k keyColumns, lo, hi []string) (string, []any) {
	var conds []string
	var args []any
	if lo != nil {
		conds = append(conds, fmt.Sprintf("ROW(%s) > ROW(%s)", keyList(k.cols, ""), params(k.types, 1)))
		for _, v := range lo {
			args = append(args, v)
		}
	}
	if hi != nil {
		conds = append(conds, fmt.Sprintf("ROW(%s) <= ROW(%s)", keyList(k.cols, ""), params(k.types, len(args)+1)))
		for _, v := range hi {
			args = append(args, v)
		}
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " AND "), args
}

// chunk is one key sub-range of a table: keys after lo up to hi (nil: unbounded).
type chunk struct {
	table    string
	lo, hi   []string
	rows     int64
	hash     string
	tgtRows  int64
	tgtHash  string
	differs  bool
	lastOfTb bool
}

// chunkSQL reads the source's next chunk of t after lo (the first with no lo): up to n
// rows in key order, their count and hash sum, and the last key as text.
func (p *onlinePlan) chunkSQL(t string, lo []string, n int) (string, []any) {
	k := p.pks[t]
	bounds, args := boundsSQL(k, lo, nil)
	lastCols := make([]string, len(k.cols))
	// c.col: a bare name would sort by the output column of that name, the text.
	desc := make([]string, len(k.cols))
	for i, c := range k.cols {
		lastCols[i] = pgx.Identifier{c}.Sanitize() + "::text"
		desc[i] = "c." + pgx.Identifier{c}.Sanitize() + " DESC"
	}
	return fmt.Sprintf(`WITH c AS MATERIALIZED (SELECT %s, %s AS h FROM %s x WHERE %s AND %s ORDER BY %s LIMIT %d),
l AS (SELECT %s FROM c ORDER BY %s LIMIT 1)
SELECT (SELECT count(*) FROM c), (SELECT coalesce(sum(h), 0)::text FROM c), l.* FROM (SELECT 1) AS one LEFT JOIN l ON true`,
		keyList(k.cols, ""), p.hashExpr(t), catalog.QuoteTable(t), p.rangeSQL(t), bounds, keyList(k.cols, ""), n,
		strings.Join(lastCols, ", "), strings.Join(desc, ", ")), args
}

// nextChunk reads the source's next chunk of t after lo (see chunkSQL).
func (p *onlinePlan) nextChunk(ctx context.Context, tx pgx.Tx, t string, lo []string, n int) (chunk, error) {
	q, args := p.chunkSQL(t, lo, n)
	c := chunk{table: t, lo: lo}
	last := make([]*string, len(p.pks[t].cols))
	dest := []any{&c.rows, &c.hash}
	for i := range last {
		dest = append(dest, &last[i])
	}
	if err := tx.QueryRow(ctx, q, args...).Scan(dest...); err != nil {
		return c, fmt.Errorf("source: hash a chunk of %s: %w", t, err)
	}
	if c.rows < int64(n) {
		c.lastOfTb = true // the target's last chunk is unbounded above: extra rows count
		return c, nil
	}
	c.hi = make([]string, len(last))
	for i, v := range last {
		c.hi[i] = *v
	}
	return c, nil
}

// hashChunk hashes the target's rows of c's key sub-range.
func (p *onlinePlan) hashChunk(ctx context.Context, tx pgx.Tx, c *chunk) error {
	bounds, args := boundsSQL(p.pks[c.table], c.lo, c.hi)
	// In key order, as the source read it: through the key's index (see snapshotConn).
	q := fmt.Sprintf(`SELECT count(*), coalesce(sum(h), 0)::text FROM (SELECT %s AS h FROM %s x WHERE %s AND %s ORDER BY %s) AS s`,
		p.hashExpr(c.table), catalog.QuoteTable(c.table), p.rangeSQL(c.table), bounds, keyList(p.pks[c.table].cols, ""))
	if err := tx.QueryRow(ctx, q, args...).Scan(&c.tgtRows, &c.tgtHash); err != nil {
		return fmt.Errorf("target: hash a chunk of %s: %w", c.table, err)
	}
	c.differs = c.rows != c.tgtRows || c.hash != c.tgtHash
	return nil
}

// compareSnapshots hashes every table's range chunk by chunk on both sides: the source
// cuts the chunks, and the target hashes each as soon as it is cut, so the two sides work
// at once. Differing chunks are then narrowed down to keys. A difference is ErrMismatch
// naming the first keys.
func compareSnapshots(ctx context.Context, src, dst snapshotSide, p *onlinePlan, opts OnlineOptions) (OnlineVerification, error) {
	opts.defaults()
	start := time.Now()
	v := OnlineVerification{}
	chunks := make(chan chunk, 4)
	var done []chunk
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(chunks)
		for _, t := range p.tables {
			var lo []string
			for {
				c, err := p.nextChunk(gctx, src.tx, t, lo, opts.ChunkRows)
				if err != nil {
					return err
				}
				select {
				case chunks <- c:
				case <-gctx.Done():
					return gctx.Err()
				}
				if c.lastOfTb {
					break
				}
				lo = c.hi
			}
		}
		return nil
	})
	g.Go(func() error {
		var rows int64
		for c := range chunks {
			if err := p.hashChunk(gctx, dst.tx, &c); err != nil {
				return err
			}
			rows += c.rows
			done = append(done, c)
			if opts.Progress != nil {
				opts.Progress(progressOf(c.table, rows, len(done), opts.Expect, time.Since(start)))
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return v, err
	}
	v.Tables = summarize(p.tables, done)
	for _, t := range v.Tables {
		v.Rows += t.Rows
		v.Chunks += t.Chunks
	}
	var diffs []RowDiff
	for _, c := range done {
		if !c.differs {
			continue
		}
		d, err := p.narrow(ctx, src, dst, c)
		if err != nil {
			return v, err
		}
		diffs = append(diffs, d...)
	}
	v.Took = time.Since(start)
	return v, reportDiffs(&v, diffs, opts, p.r)
}

func progressOf(table string, rows int64, chunks int, expect int64, elapsed time.Duration) OnlineProgress {
	pr := OnlineProgress{Table: table, Rows: rows, Chunks: chunks, Expect: expect, Elapsed: elapsed}
	if expect > rows && rows > 0 {
		pr.ETA = time.Duration(float64(elapsed) * float64(expect-rows) / float64(rows))
	}
	return pr
}

func summarize(tables []string, done []chunk) []ChunkedTable {
	out := make([]ChunkedTable, len(tables))
	idx := map[string]int{}
	for i, t := range tables {
		out[i].Table = t
		idx[t] = i
	}
	for _, c := range done {
		s := &out[idx[c.table]]
		s.Rows += c.rows
		s.TargetRows += c.tgtRows
		s.Chunks++
		if c.differs {
			s.DiffChunks++
		}
	}
	return out
}

// reportDiffs puts the differing keys into v (the first opts.ReportKeys) and opts.DiffOut
// (all), and makes them an ErrMismatch.
func reportDiffs(v *OnlineVerification, diffs []RowDiff, opts OnlineOptions, r catalog.KeyRange) error {
	v.DiffCount = len(diffs)
	v.Diffs = diffs[:min(len(diffs), opts.ReportKeys)]
	if opts.DiffOut != nil {
		for _, d := range diffs {
			if _, err := fmt.Fprintln(opts.DiffOut, d.String()); err != nil {
				return fmt.Errorf("cutover: write the differing keys: %w", err)
			}
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	shown := make([]string, 0, 5)
	for _, d := range diffs[:min(len(diffs), 5)] {
		shown = append(shown, d.String())
	}
	more := ""
	if len(diffs) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(diffs)-len(shown))
	}
	return fmt.Errorf("%w for %s: %d differing rows: %s%s", ErrMismatch, r, len(diffs), strings.Join(shown, "; "), more)
}

// rowHashes reads the key (its columns keyCols, as text) and hash of every row of t
// that where selects.
func (p *onlinePlan) rowHashes(ctx context.Context, db Querier, t string, keyCols []string, where string, args []any) (map[string]rowHash, error) {
	q := fmt.Sprintf(`SELECT ARRAY[%s], %s::text FROM %s x WHERE %s AND %s`,
		keyList(keyCols, "::text"), p.hashExpr(t), catalog.QuoteTable(t), p.rangeSQL(t), where)
	return keyedHashes(ctx, db, q, args)
}

type rowHash struct {
	key  []string
	hash string
}

// narrow finds the keys of a differing chunk that differ, in key order of the text form.
func (p *onlinePlan) narrow(ctx context.Context, src, dst snapshotSide, c chunk) ([]RowDiff, error) {
	bounds, args := boundsSQL(p.pks[c.table], c.lo, c.hi)
	cols := p.pks[c.table].cols
	s, err := p.rowHashes(ctx, src.tx, c.table, cols, bounds, args)
	if err != nil {
		return nil, fmt.Errorf("source: narrow a chunk of %s: %w", c.table, err)
	}
	d, err := p.rowHashes(ctx, dst.tx, c.table, cols, bounds, args)
	if err != nil {
		return nil, fmt.Errorf("target: narrow a chunk of %s: %w", c.table, err)
	}
	return diffRows(c.table, cols, s, d), nil
}

// diffRows lists the keys whose rows differ between s and d.
func diffRows(table string, cols []string, s, d map[string]rowHash) []RowDiff {
	var out []RowDiff
	for k, sr := range s {
		dr, ok := d[k]
		switch {
		case !ok:
			out = append(out, RowDiff{Table: table, Columns: cols, Key: sr.key, Problem: "missing on target"})
		case dr.hash != sr.hash:
			out = append(out, RowDiff{Table: table, Columns: cols, Key: sr.key, Problem: "differs"})
		}
	}
	for k, dr := range d {
		if _, ok := s[k]; !ok {
			out = append(out, RowDiff{Table: table, Columns: cols, Key: dr.key, Problem: "missing on source"})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.Join(out[i].Key, "\x00") < strings.Join(out[j].Key, "\x00")
	})
	return out
}
