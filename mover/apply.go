package mover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Batching of the apply: several source transactions go into one target transaction, and
// the statements are sent in pipelined batches (one round trip each).
const (
	flushStatements  = 1000    // statements per round trip
	flushBytes       = 4 << 20 // or this many bytes of values
	commitTxs        = 5000    // source transactions per target transaction at most
	commitStatements = 20000   // statements per target transaction at most (at a source commit)
	commitInterval   = 500 * time.Millisecond
)

// rowFetcher reads the current text values of some columns of one source row (nil if the
// row is gone from the range).
type rowFetcher func(ctx context.Context, rel *relation, cols []int, where [][]byte) ([][]byte, error)

// applier applies segments, in order, on the target connection. A target transaction holds
// whole source transactions only; reshard.progress is written in it with the end LSN of
// its last source transaction, and that LSN is published as applied only after COMMIT.
type applier struct {
	conn  *pgx.Conn
	id    string
	fetch rowFetcher
	// advance publishes an applied position (after commit): lsn, source time, transactions.
	advance func(lsn pglogrepl.LSN, at time.Time, txs int)
	log     func(msg string, args ...any)

	stmts map[stmtKey]string
	n     int

	batch      pgconn.Batch
	expect     []expectation
	batchBytes int

	txOpen    bool // BEGIN queued or sent
	txStarted time.Time
	inSrcTx   bool // inside a source transaction
	srcTxs    int
	stmtsInTx int
	lastEnd   pglogrepl.LSN
	lastTime  time.Time
	pendW     pglogrepl.LSN // keepalive position reached once the open transaction commits
	pendWTime time.Time

	// phantoms are rows (by table and key) that exist at this point of the stream but not
	// on the target: they entered the range with unchanged TOASTed values that could not
	// be read from the source any more (see upsert).
	phantoms map[string]bool
}

type stmtKey struct {
	rel   *relation
	op    byte
	shape string
}

// expectation says how many rows a batched statement must affect.
type expectation struct {
	kind  byte // 0: any; '1': exactly one; '?': zero or one; 'c': COMMIT
	what  string
	table string
}

func newApplier(conn *pgx.Conn, id string, phantoms map[string]bool, fetch rowFetcher, advance func(pglogrepl.LSN, time.Time, int), log func(string, ...any)) *applier {
	return &applier{conn: conn, id: id, fetch: fetch, advance: advance, log: log, stmts: map[stmtKey]string{}, phantoms: phantoms}
}

// run applies segments from in until it is closed or ctx ends.
func (a *applier) run(ctx context.Context, in <-chan segment) error {
	for {
		var seg segment
		var ok bool
		if a.txOpen && !a.inSrcTx {
			// Between source transactions: commit when nothing more is ready at once.
			select {
			case seg, ok = <-in:
			default:
				if err := a.commit(ctx); err != nil {
					return err
				}
				continue
			}
		} else {
			select {
			case seg, ok = <-in:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !ok {
			// The stream stopped: keep what is complete.
			if a.txOpen && !a.inSrcTx {
				return a.commit(ctx)
			}
			return nil
		}
		if err := a.handle(ctx, seg); err != nil {
			return err
		}
	}
}

func (a *applier) handle(ctx context.Context, seg segment) error {
	if seg.keepalive {
		switch {
		case a.inSrcTx:
			// The receiver sends positions only between transactions.
		case a.txOpen:
			if seg.walEnd > a.pendW {
				a.pendW, a.pendWTime = seg.walEnd, seg.serverTime
			}
		default:
			a.advance(seg.walEnd, seg.serverTime, 0)
		}
		return nil
	}
	if seg.begin {
		a.inSrcTx = true
		if !a.txOpen {
			a.batch.ExecParams("BEGIN", nil, nil, nil, nil)
			a.expect = append(a.expect, expectation{})
			a.txOpen, a.txStarted = true, time.Now()
		}
	}
	for i := range seg.changes {
		if err := a.add(ctx, &seg.changes[i]); err != nil {
			return err
		}
	}
	if seg.commit {
		a.inSrcTx = false
		a.lastEnd, a.lastTime = seg.endLSN, seg.commitTime
		a.srcTxs++
		if a.srcTxs >= commitTxs || a.stmtsInTx >= commitStatements || time.Since(a.txStarted) >= commitInterval {
			return a.commit(ctx)
		}
	}
	if len(a.expect) >= flushStatements || a.batchBytes >= flushBytes {
		return a.flush(ctx)
	}
	return nil
}

// commit ends the target transaction with the progress row and publishes its position.
func (a *applier) commit(ctx context.Context) error {
	if !a.txOpen {
		return nil
	}
	if a.srcTxs > 0 {
		name, err := a.prepare(ctx, stmtKey{op: 'P'}, func() string { return progressUpsert })
		if err != nil {
			return err
		}
		a.batch.ExecPrepared(name, [][]byte{[]byte(a.id), []byte(a.lastEnd.String())}, nil, nil)
		a.expect = append(a.expect, expectation{kind: '1', what: "progress"})
	}
	a.batch.ExecParams("COMMIT", nil, nil, nil, nil)
	a.expect = append(a.expect, expectation{kind: 'c'})
	if err := a.flush(ctx); err != nil {
		return err
	}
	pos, at := a.lastEnd, a.lastTime
	if a.pendW > pos {
		pos, at = a.pendW, a.pendWTime
	}
	a.advance(pos, at, a.srcTxs)
	a.txOpen, a.srcTxs, a.stmtsInTx, a.pendW = false, 0, 0, 0
	return nil
}

// flush sends the queued statements in one round trip and checks every result.
func (a *applier) flush(ctx context.Context) error {
	if len(a.expect) == 0 {
		return nil
	}
	results, err := a.conn.PgConn().ExecBatch(ctx, &a.batch).ReadAll()
	expect := a.expect
	a.batch, a.expect, a.batchBytes = pgconn.Batch{}, a.expect[:0], 0
	if err != nil {
		if transient(err) || ctx.Err() != nil {
			return fmt.Errorf("target: apply: %w", err)
		}
		return &fatalError{fmt.Errorf("target: apply refused a change (the target differs from the source, or was altered): %w", err)}
	}
	for i, r := range results {
		if i >= len(expect) {
			break
		}
		e := expect[i]
		n := r.CommandTag.RowsAffected()
		switch {
		case e.kind == '1' && n != 1 && e.what == "progress":
			return fatalf("target: reshard.progress of migration %s is already past this transaction: is another mover running with the same id? Stop it; this one stops", a.id)
		case e.kind == '1' && n != 1:
			return fatalf("target: %s of a row of %s changed %d rows instead of 1: the target copy has diverged from the source; cancel the migration and start it again", e.what, e.table, n)
		case e.kind == '?' && n > 1:
			return fatalf("target: %s of a row of %s changed %d rows", e.what, e.table, n)
		case e.kind == 'c' && r.CommandTag.String() != "COMMIT":
			return fatalf("target: apply transaction ended with %q instead of COMMIT", r.CommandTag.String())
		}
	}
	return nil
}

func (a *applier) prepare(ctx context.Context, k stmtKey, sql func() string) (string, error) {
	if name, ok := a.stmts[k]; ok {
		return name, nil
	}
	name := fmt.Sprintf("reshard_apply_%d", a.n)
	a.n++
	if _, err := a.conn.PgConn().Prepare(ctx, name, sql(), nil); err != nil {
		if transient(err) {
			return "", fmt.Errorf("target: prepare: %w", err)
		}
		return "", &fatalError{fmt.Errorf("target: prepare the apply of %s (was the table altered?): %w", tableOf(k), err)}
	}
	a.stmts[k] = name
	return name, nil
}

func tableOf(k stmtKey) string {
	if k.rel == nil {
		return "reshard.progress"
	}
	return k.rel.name
}

func (a *applier) queue(name string, vals [][]byte, e expectation, size int) {
	a.batch.ExecPrepared(name, vals, nil, nil)
	a.expect = append(a.expect, e)
	a.batchBytes += size
	a.stmtsInTx++
}

// add queues the statement(s) of one change.
func (a *applier) add(ctx context.Context, c *change) error {
	rel := c.rel
	switch c.op {
	case 'I':
		return a.upsert(ctx, c)
	case 'U':
		where, err := c.whereValues()
		if err != nil {
			return err
		}
		if a.phantoms[phantomKeyOf(rel.dst.Name, where)] {
			// The row is not on the target (see phantoms): write it whole.
			if err := a.setPhantom(ctx, rel, where, false); err != nil {
				return err
			}
			return a.upsert(ctx, c)
		}
		byOld := c.oldTup != nil
		var set []int
		shape := make([]byte, len(rel.cols)+1)
		isWhere := map[int]bool{}
		for _, w := range rel.where {
			isWhere[w] = true
		}
		for i, col := range c.newTup.Columns {
			shape[i] = col.DataType
			if col.DataType == pglogrepl.TupleDataTypeToast || (isWhere[i] && !byOld) {
				continue
			}
			set = append(set, i)
		}
		if byOld {
			shape[len(rel.cols)] = 'K'
		}
		if len(set) == 0 {
			return nil // only unchanged values: nothing to write
		}
		name, err := a.prepare(ctx, stmtKey{rel: rel, op: 'U', shape: string(shape)}, func() string { return updateSQL(rel, set) })
		if err != nil {
			return err
		}
		vals := make([][]byte, 0, len(set)+len(where))
		for _, i := range set {
			vals = append(vals, c.newTup.Columns[i].Data)
		}
		a.queue(name, append(vals, where...), expectation{kind: '1', what: "an UPDATE", table: rel.name}, c.size)
	case 'D':
		where, err := c.whereValues()
		if err != nil {
			return err
		}
		if a.phantoms[phantomKeyOf(rel.dst.Name, where)] {
			return a.setPhantom(ctx, rel, where, false) // it never reached the target
		}
		name, err := a.prepare(ctx, stmtKey{rel: rel, op: 'D'}, func() string { return deleteSQL(rel) })
		if err != nil {
			return err
		}
		a.queue(name, where, expectation{kind: '1', what: "a DELETE", table: rel.name}, c.size)
	}
	return nil
}

// upsert writes the change's new row whole, by primary key.
//
// A row that enters the range by an UPDATE of its key arrives as an INSERT whose unchanged
// TOASTed values are not in the stream (PostgreSQL's own apply stores NULL there). Those
// values are read from the source as they are now: any later change of them is in the
// stream after this one, so the target converges. If the row is no longer in the range
// under this key, a later change in the stream deletes it or gives it a new key; until
// then it is a phantom, and that later change writes it whole in turn.
func (a *applier) upsert(ctx context.Context, c *change) error {
	rel := c.rel
	vals := make([][]byte, len(rel.cols))
	var missing []int
	for i, col := range c.newTup.Columns {
		switch col.DataType {
		case pglogrepl.TupleDataTypeText:
			vals[i] = col.Data
		case pglogrepl.TupleDataTypeToast:
			missing = append(missing, i)
		}
	}
	where := make([][]byte, len(rel.where))
	for i, w := range rel.where {
		col := c.newTup.Columns[w]
		if col.DataType != pglogrepl.TupleDataTypeText {
			return fatalf("a row of %s arrived without its key column %q", rel.name, rel.cols[w].name)
		}
		where[i] = col.Data
	}
	if len(missing) > 0 {
		got, err := a.fetch(ctx, rel, missing, where)
		if err != nil {
			return err
		}
		if got == nil {
			a.log("row entered the range but has left it on the source; waiting for its next change", "table", rel.name)
			return a.setPhantom(ctx, rel, where, true)
		}
		for j, i := range missing {
			vals[i] = got[j]
		}
	}
	if err := a.setPhantom(ctx, rel, where, false); err != nil {
		return err
	}
	name, err := a.prepare(ctx, stmtKey{rel: rel, op: 'I'}, func() string { return insertSQL(rel) })
	if err != nil {
		return err
	}
	a.queue(name, vals, expectation{}, c.size)
	return nil
}

func phantomKeyOf(table string, vals [][]byte) string {
	var b strings.Builder
	b.WriteString(table)
	for _, v := range vals {
		b.WriteByte(0)
		b.Write(v)
	}
	return b.String()
}

// setPhantom records (on) or clears the phantom row of rel with key vals, in memory and,
// in the same target transaction, in reshard.phantoms.
func (a *applier) setPhantom(ctx context.Context, rel *relation, vals [][]byte, on bool) error {
	key := phantomKeyOf(rel.dst.Name, vals)
	if a.phantoms[key] == on {
		return nil
	}
	sql, op := phantomDelete, byte('d')
	if on {
		sql, op = phantomInsert, 'i'
		a.phantoms[key] = true
	} else {
		delete(a.phantoms, key)
	}
	name, err := a.prepare(ctx, stmtKey{op: op}, func() string { return sql })
	if err != nil {
		return err
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = string(v)
	}
	arr, err := textArray(parts)
	if err != nil {
		return err
	}
	a.queue(name, [][]byte{[]byte(a.id), []byte(rel.dst.Name), arr}, expectation{}, len(arr))
	return nil
}

// textArray renders a text[] literal.
func textArray(vals []string) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, r := range v {
			if r == '"' || r == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// insertSQL is an upsert by primary key: a row may enter the range by an UPDATE of its key.
func insertSQL(rel *relation) string {
	cols := make([]string, len(rel.cols))
	params := make([]string, len(rel.cols))
	var upd []string
	for i, c := range rel.cols {
		cols[i] = ident(c.name)
		params[i] = fmt.Sprintf("$%d::%s", i+1, c.typ)
		if !c.pk {
			upd = append(upd, fmt.Sprintf("%s = EXCLUDED.%s", ident(c.name), ident(c.name)))
		}
	}
	pk := make([]string, len(rel.dst.PK))
	for i, c := range rel.dst.PK {
		pk[i] = ident(c)
	}
	action := "DO NOTHING"
	if len(upd) > 0 {
		action = "DO UPDATE SET " + strings.Join(upd, ", ")
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) %s",
		rel.dst.Qualified(), strings.Join(cols, ", "), strings.Join(params, ", "), strings.Join(pk, ", "), action)
}

func whereClause(rel *relation, first int) string {
	conds := make([]string, len(rel.where))
	for i, w := range rel.where {
		conds[i] = fmt.Sprintf("%s = $%d::%s", ident(rel.cols[w].name), first+i, rel.cols[w].typ)
	}
	return strings.Join(conds, " AND ")
}

// updateSQL sets the given columns of the row found by its identity (the old key when the
// key changed); unchanged TOASTed columns are simply not among them.
func updateSQL(rel *relation, set []int) string {
	sets := make([]string, len(set))
	for j, i := range set {
		sets[j] = fmt.Sprintf("%s = $%d::%s", ident(rel.cols[i].name), j+1, rel.cols[i].typ)
	}
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s", rel.dst.Qualified(), strings.Join(sets, ", "), whereClause(rel, len(set)+1))
}

func deleteSQL(rel *relation) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s", rel.dst.Qualified(), whereClause(rel, 1))
}

// errStreamEnded is returned when the source ends the replication stream.
var errStreamEnded = errors.New("source: the server ended the replication stream")
