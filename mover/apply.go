package mover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Batching of the apply: many source transactions go into one target transaction; row
// changes are grouped into multi-row statements; statements go in pipelined batches.
const (
	flushRows  = 2000    // row changes per round trip
	flushBytes = 4 << 20 // or this many bytes of values
	// A target transaction ends at the first source commit past these. Not much larger:
	// the row versions a transaction replaces cannot be pruned before it ends, so a hot
	// row updated many times in one huge transaction makes every later lookup slower.
	commitTxs      = 1000
	commitRows     = 2000
	commitInterval = 200 * time.Millisecond
	// Between source transactions, a target transaction is committed when the source has
	// sent everything it had (a keepalive), or when nothing comes for lingerTime while
	// someone waits for a position, or for quietTime otherwise (see applier.next).
	lingerTime = 2 * time.Millisecond
	quietTime  = 20 * time.Millisecond
	// groupMax is the most rows one statement carries (fewer for wide tables: at most
	// 65535 parameters).
	groupMax = 64
)

// rowFetcher reads the current text values of some columns of one source row (nil if the
// row is gone from the range).
type rowFetcher func(ctx context.Context, rel *relation, cols []int, where [][]byte) ([][]byte, error)

// applier applies segments, in order, on the target connection. A target transaction holds
// whole source transactions only; reshard.progress is written in it with the end LSN of
// its last source transaction, and that LSN is published as applied only after COMMIT.
//
// Row changes are grouped into multi-row statements: consecutive changes of one table with
// the same operation and columns, on distinct rows. In replica mode (no foreign-key checks,
// no triggers) the groups of different tables may be reordered against each other; the
// changes of one table always keep their order.
type applier struct {
	conn    *pgx.Conn
	id      string
	replica bool
	// token: each target transaction first share-locks the migration's fence row on the
	// target and checks it still carries this driver's token (0: no check).
	token int64
	fetch rowFetcher
	// advance publishes an applied position (after commit): lsn, source time, transactions.
	advance func(lsn pglogrepl.LSN, at time.Time, txs int)
	log     func(msg string, args ...any)
	// hold, if set, is the hold to stop at (nil: none); record notes each row change
	// (table, identity columns, their values): see HoldApply.
	hold   func() *applyHold
	record func() func(table string, cols []string, vals [][]byte)
	// eager says someone waits for a position; linger and quiet are how long a pause
	// between source transactions must be to commit then, and else (see next).
	eager func() bool
	// linger, quiet: see next; interval: a target transaction ends at the first source
	// commit after it has been open this long (commitInterval).
	linger, quiet, interval time.Duration
	// sentAll: the last segment was a keepalive, so the source had sent everything it
	// had decoded; the open target transaction is committed after the segments at hand.
	sentAll bool

	stmts map[stmtKey]string
	n     int

	batch  pgconn.Batch
	expect []expectation
	groups []*group          // pending, in order
	open   map[*table]*group // the group of each table that may still grow
	// pending finds the not yet sent change of a row, so that a later change of the same
	// row in the same target transaction folds into it (replica mode only).
	pending map[string]rowRef
	rows    int // row changes pending
	bytes   int
	stmtsTx int // row changes in the open target transaction

	txOpen    bool // BEGIN queued or sent
	txStarted time.Time
	inSrcTx   bool // inside a source transaction
	srcTxs    int
	lastEnd   pglogrepl.LSN
	lastTime  time.Time
	pendW     pglogrepl.LSN // keepalive position reached once the open transaction commits
	pendWTime time.Time

	// phantoms are rows (by table and key) that exist at this point of the stream but not
	// on the target: they entered the range with unchanged TOASTed values that could not
	// be read from the source any more (see upsert).
	phantoms map[string]bool

	// overlap: source transactions committed before it are applied idempotently (see
	// addIdempotent); idem says the open source transaction is one of them.
	overlap pglogrepl.LSN
	idem    bool
}

type stmtKey struct {
	rel   *relation
	op    byte
	shape string
	rows  int
}

// expectation says how many rows a batched statement must affect.
type expectation struct {
	rows  int64 // -1: any
	what  string
	table string
}

type rowRef struct {
	g *group
	i int
}

// group is a run of row changes that one statement per groupMax rows applies.
type group struct {
	rel    *relation
	op     byte       // 'I' insert, 'U' update by unchanged key, 'K' update that changes the key, 'R' replace, 'D' delete, 'X' upsert, 'Y' delete if there
	shape  string     // 'U'/'K'/'R': which columns are set
	set    []int      // 'U'/'K'/'R': the columns set
	rows   [][][]byte // nil: folded into a later change
	keys   map[string]bool
	closed bool
}

func newApplier(conn *pgx.Conn, id string, replica bool, phantoms map[string]bool, fetch rowFetcher, advance func(pglogrepl.LSN, time.Time, int), log func(string, ...any)) *applier {
	return &applier{conn: conn, id: id, replica: replica, fetch: fetch, advance: advance, log: log,
		stmts: map[stmtKey]string{}, phantoms: phantoms, open: map[*table]*group{}, pending: map[string]rowRef{},
		linger: lingerTime, quiet: quietTime, interval: commitInterval}
}

// run applies segments from in until it is closed or ctx ends.
func (a *applier) run(ctx context.Context, in <-chan []segment) error {
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	for {
		segs, ok, err := a.next(ctx, in, pause)
		if err != nil {
			return err
		}
		if !ok {
			// The stream stopped: keep what is complete.
			if a.txOpen && !a.inSrcTx {
				return a.commit(ctx)
			}
			return nil
		}
		for _, seg := range segs {
			if err := a.handle(ctx, seg); err != nil {
				return err
			}
		}
		if a.sentAll && a.txOpen && !a.inSrcTx {
			// The source has sent all it had: what is applied may as well be visible.
			if err := a.commit(ctx); err != nil {
				return err
			}
		}
	}
}

// next waits for the next segments. Between source transactions with a target transaction
// open, it commits that transaction if nothing comes for a while: a.linger while someone
// waits for a position (a cutover), else a.quiet. In a backlog the source sends without a
// pause, and when it has sent everything it says so (a keepalive: see sentAll), so a pause
// in the input is mostly this process not being scheduled: committing there made target
// transactions of a few dozen source transactions on a loaded machine (a round trip and a
// commit each) instead of a thousand.
func (a *applier) next(ctx context.Context, in <-chan []segment, pause *time.Timer) ([]segment, bool, error) {
	if a.txOpen && !a.inSrcTx {
		select {
		case segs, ok := <-in:
			return segs, ok, nil
		default:
		}
		wait := a.quiet
		if a.eager != nil && a.eager() {
			wait = a.linger
		}
		pause.Reset(wait)
		select {
		case segs, ok := <-in:
			pause.Stop()
			return segs, ok, nil
		case <-pause.C:
			if err := a.commit(ctx); err != nil {
				return nil, false, err
			}
		case <-ctx.Done():
			pause.Stop()
			return nil, false, ctx.Err()
		}
	}
	select {
	case segs, ok := <-in:
		return segs, ok, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

func (a *applier) handle(ctx context.Context, seg segment) error {
	if err := a.checkHold(ctx, seg); err != nil {
		return err
	}
	a.sentAll = seg.keepalive
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
		a.idem = seg.finalLSN < a.overlap
		if !a.txOpen {
			a.batch.ExecParams("BEGIN", nil, nil, nil, nil)
			a.expect = append(a.expect, expectation{rows: -1})
			if a.token != 0 {
				a.batch.ExecParams(tokenCheckSQL, [][]byte{[]byte(a.id), []byte(strconv.FormatInt(a.token, 10))}, nil, nil, nil)
				a.expect = append(a.expect, expectation{rows: 1, what: "token"})
			}
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
		if a.srcTxs >= commitTxs || a.stmtsTx >= commitRows || time.Since(a.txStarted) >= a.interval {
			return a.commit(ctx)
		}
	}
	if a.rows >= flushRows || a.bytes >= flushBytes {
		return a.flush(ctx)
	}
	return nil
}

// checkHold stops at a boundary between source transactions at or past the hold's
// threshold: before a transaction whose commit record starts there (everything that
// commits before it is applied, in commit order), or at a keepalive that far between
// transactions (everything before it was sent). The open target transaction is committed
// first, so that a snapshot on the target sees exactly what is applied.
func (a *applier) checkHold(ctx context.Context, seg segment) error {
	if a.hold == nil {
		return nil
	}
	h := a.hold()
	if h == nil {
		return nil
	}
	var at pglogrepl.LSN
	switch {
	case seg.begin:
		at = seg.finalLSN
	case seg.keepalive && !a.inSrcTx:
		at = seg.walEnd
	default:
		return nil
	}
	if threshold, _, released, _ := h.state(); released || at < threshold {
		return nil
	}
	if err := a.commit(ctx); err != nil {
		return err
	}
	return h.wait(ctx, at)
}

// noteChange records the rows a change touches (its identity before and after) while a
// record runs (see HoldApply).
func (a *applier) noteChange(c *change) {
	if a.record == nil {
		return
	}
	record := a.record()
	if record == nil {
		return
	}
	rel := c.rel
	cols := make([]string, len(rel.where))
	for i, w := range rel.where {
		cols[i] = rel.cols[w].name
	}
	for _, t := range []tuple{c.oldTup, c.newTup} {
		if t == nil {
			continue
		}
		vals := make([][]byte, len(rel.where))
		whole := true
		for i, w := range rel.where {
			if t[w].kind != 't' {
				whole = false
				break
			}
			vals[i] = t[w].data
		}
		if whole {
			record(rel.dst.Name, cols, vals)
		}
	}
}

// commit ends the target transaction with the progress row and publishes its position.
func (a *applier) commit(ctx context.Context) error {
	if !a.txOpen {
		return nil
	}
	if err := a.emitGroups(ctx); err != nil {
		return err
	}
	if a.srcTxs > 0 {
		name, err := a.prepare(ctx, stmtKey{op: 'P'}, func() string { return progressUpsert })
		if err != nil {
			return err
		}
		a.batch.ExecPrepared(name, [][]byte{[]byte(a.id), []byte(a.lastEnd.String())}, nil, nil)
		a.expect = append(a.expect, expectation{rows: 1, what: "progress"})
	}
	a.batch.ExecParams("COMMIT", nil, nil, nil, nil)
	a.expect = append(a.expect, expectation{rows: -1, what: "COMMIT"})
	if err := a.exec(ctx); err != nil {
		return err
	}
	pos, at := a.lastEnd, a.lastTime
	if a.pendW > pos {
		pos, at = a.pendW, a.pendWTime
	}
	a.advance(pos, at, a.srcTxs)
	a.txOpen, a.srcTxs, a.stmtsTx, a.pendW = false, 0, 0, 0
	return nil
}

// flush sends what is pending without ending the target transaction.
func (a *applier) flush(ctx context.Context) error {
	if err := a.emitGroups(ctx); err != nil {
		return err
	}
	return a.exec(ctx)
}

// exec sends the queued statements in one round trip and checks every result.
func (a *applier) exec(ctx context.Context) error {
	if len(a.expect) == 0 {
		return nil
	}
	results, err := a.conn.PgConn().ExecBatch(ctx, &a.batch).ReadAll()
	expect := a.expect
	a.batch, a.expect, a.rows, a.bytes = pgconn.Batch{}, a.expect[:0], 0, 0
	if err != nil {
		if transient(err) || ctx.Err() != nil {
			return fmt.Errorf("target: apply: %w", err)
		}
		return &fatalError{fmt.Errorf("target: apply refused a change (the target differs from the source, or was altered; cancel the migration and start it again): %w", err)}
	}
	for i, r := range results {
		if i >= len(expect) {
			break
		}
		e := expect[i]
		n := r.CommandTag.RowsAffected()
		switch {
		case e.what == "token" && n != 1:
			return &fatalError{fmt.Errorf("target: apply of migration %s: %w", a.id, ErrStaleDriver)}
		case e.what == "progress" && n != 1:
			return fatalf("target: reshard.progress of migration %s is already past this transaction: is another mover running with the same id? Stop it; this one stops", a.id)
		case e.what == "COMMIT" && r.CommandTag.String() != "COMMIT":
			return fatalf("target: apply transaction ended with %q instead of COMMIT", r.CommandTag.String())
		case e.rows >= 0 && n != e.rows:
			return fatalf("target: %s of %d rows of %s changed %d: the target copy has diverged from the source; cancel the migration and start it again", e.what, e.rows, e.table, n)
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
		what := "reshard's own tables"
		if k.rel != nil {
			what = k.rel.name
		}
		return "", &fatalError{fmt.Errorf("target: prepare the apply of %s (was the table altered?): %w", what, err)}
	}
	a.stmts[k] = name
	return name, nil
}

// fold merges a row change into the pending change of the same row, when the two make one:
// an insert or update followed by an update of the same columns becomes the first with the
// new values; an insert followed by a delete becomes nothing; an update followed by a
// delete becomes the delete. The target transaction is atomic and nothing reads the
// target before the cutover, so only its end state matters. Only in replica mode (no
// foreign-key checks, no triggers) and on tables whose only unique index is the primary
// key: folding moves a change earlier, past changes of other rows.
func (a *applier) fold(rel *relation, op byte, shape string, set []int, vals [][]byte, key string) bool {
	if !a.replica || rel.dst.ExtraUnique {
		return false
	}
	p, ok := a.pending[key]
	if !ok || p.g.rel != rel || p.g.rows[p.i] == nil {
		return false
	}
	row := p.g.rows[p.i]
	switch {
	case op == 'U' && p.g.op == 'I':
		for j, c := range set {
			row[c] = vals[j]
		}
		return true
	case op == 'U' && p.g.op == 'U' && p.g.shape == shape:
		copy(row[:len(set)], vals[:len(set)])
		return true
	case op == 'D' && p.g.op == 'I':
		p.g.rows[p.i] = nil
		delete(a.pending, key)
		return true
	case op == 'D' && p.g.op == 'U':
		p.g.rows[p.i] = nil
		return false // and the delete is queued
	}
	return false
}

// addRow puts one row change into a group: the table's open group if it fits, else a new
// one. Groups of other tables stay open only in replica mode.
func (a *applier) addRow(rel *relation, op byte, shape string, set []int, vals [][]byte, key string, size int) {
	a.rows++
	a.stmtsTx++
	a.bytes += size
	if a.fold(rel, op, shape, set, vals, key) {
		return
	}
	g := a.open[rel.dst]
	fits := g != nil && !g.closed && g.rel == rel && g.op == op && g.shape == shape && op != 'K' && op != 'R' && !g.keys[key]
	if !fits {
		if g != nil {
			g.closed = true
		}
		if !a.replica {
			for _, o := range a.open {
				o.closed = true
			}
		}
		g = &group{rel: rel, op: op, shape: shape, set: set, keys: map[string]bool{}}
		a.groups = append(a.groups, g)
		a.open[rel.dst] = g
	}
	g.rows = append(g.rows, vals)
	g.keys[key] = true
	if op == 'K' || op == 'R' {
		// A key change or a replace: nothing before it folds with what comes after (see
		// forget).
		return
	}
	a.pending[key] = rowRef{g: g, i: len(g.rows) - 1}
}

// forget stops later changes of a row from folding into earlier ones.
func (a *applier) forget(keys ...string) {
	for _, k := range keys {
		delete(a.pending, k)
	}
}

// emitGroups turns the pending groups into statements of the batch, in order.
func (a *applier) emitGroups(ctx context.Context) error {
	for _, g := range a.groups {
		live := g.rows[:0]
		for _, r := range g.rows {
			if r != nil {
				live = append(live, r)
			}
		}
		if len(live) == 0 {
			continue
		}
		limit := max(1, min(groupMax, 65535/max(len(live[0]), 1)))
		for rows := live; len(rows) > 0; {
			n := 1
			for _, size := range []int{64, 16, 4} {
				if size <= limit && len(rows) >= size {
					n = size
					break
				}
			}
			if err := a.emit(ctx, g, rows[:n]); err != nil {
				return err
			}
			rows = rows[n:]
		}
	}
	a.groups = a.groups[:0]
	clear(a.open)
	clear(a.pending)
	return nil
}

func (a *applier) emit(ctx context.Context, g *group, rows [][][]byte) error {
	name, err := a.prepare(ctx, stmtKey{rel: g.rel, op: g.op, shape: g.shape, rows: len(rows)}, func() string { return groupSQL(g, len(rows)) })
	if err != nil {
		return err
	}
	vals := make([][]byte, 0, len(rows)*len(rows[0]))
	for _, r := range rows {
		vals = append(vals, r...)
	}
	a.batch.ExecPrepared(name, vals, nil, nil)
	what := map[byte]string{'I': "an INSERT", 'U': "an UPDATE", 'K': "an UPDATE", 'R': "a replace (DELETE and INSERT)", 'D': "a DELETE"}[g.op]
	n := int64(len(rows))
	if g.op == 'X' || g.op == 'Y' {
		n = -1 // idempotent: whatever the target holds
	}
	a.expect = append(a.expect, expectation{rows: n, what: what, table: g.rel.name})
	return nil
}

// locate is the row an update or delete changes on the target: the values that identify
// it, its phantom key, and whether it is a phantom (not on the target, see phantoms).
func (a *applier) locate(c *change) (where [][]byte, key string, phantom bool, err error) {
	where, err = c.whereValues()
	if err != nil {
		return nil, "", false, err
	}
	key = phantomKeyOf(c.rel.dst.Name, where)
	return where, key, a.phantoms[key], nil
}

// add queues one change.
func (a *applier) add(ctx context.Context, c *change) error {
	a.noteChange(c)
	if a.idem {
		return a.addIdempotent(ctx, c)
	}
	rel := c.rel
	switch c.op {
	case 'I':
		return a.upsert(ctx, c, 'I')
	case 'U':
		where, key, phantom, err := a.locate(c)
		if err != nil {
			return err
		}
		if phantom {
			// The row is not on the target (see phantoms): write it whole.
			if err := a.setPhantom(ctx, rel, where, false); err != nil {
				return err
			}
			return a.upsert(ctx, c, 'I')
		}
		byOld := c.oldTup != nil
		set, shape, replace := c.updateColumns()
		if len(set) == 0 {
			return nil // only unchanged values: nothing to write
		}
		vals := make([][]byte, 0, len(set)+len(where))
		for _, i := range set {
			vals = append(vals, c.newTup[i].data)
		}
		op := byte('U')
		switch {
		case replace:
			op = 'R'
		case byOld || rel.dst.ExtraUnique:
			// One statement per row: a key change, or updates that a unique index
			// besides the key could see in a different order than the source did.
			op = 'K'
		}
		if byOld || replace {
			newKey := make([][]byte, len(rel.where))
			for i, w := range rel.where {
				newKey[i] = c.newTup[w].data
			}
			a.forget(key, phantomKeyOf(rel.dst.Name, newKey))
		}
		a.addRow(rel, op, shape, set, append(vals, where...), key, c.size)
	case 'D':
		where, key, phantom, err := a.locate(c)
		if err != nil {
			return err
		}
		if phantom {
			return a.setPhantom(ctx, rel, where, false) // it never reached the target
		}
		a.addRow(rel, 'D', "", nil, where, key, c.size)
	}
	return nil
}

// addIdempotent queues a change of the overlap of a resumed copy: a source transaction
// committed before the position of the newest copy snapshot, whose effect some rows on the
// target may already hold. Each change writes its row whole (an upsert by primary key, the
// old key deleted first if it changed) or deletes it if it is there, whatever the target
// holds. Applied in commit order, the last change of each key before that position leaves
// the row as the source had it there, and a key no change touched is as copied (docs/mover.md,
// "Resumable copy").
func (a *applier) addIdempotent(ctx context.Context, c *change) error {
	rel := c.rel
	if c.op == 'D' || c.oldTup != nil {
		where, err := c.whereValues()
		if err != nil {
			return err
		}
		if err := a.setPhantom(ctx, rel, where, false); err != nil {
			return err
		}
		key := phantomKeyOf(rel.dst.Name, where)
		a.forget(key)
		a.addRow(rel, 'Y', "", nil, where, key, c.size)
		if c.op == 'D' {
			return nil
		}
	}
	return a.upsert(ctx, c, 'X')
}

// updateColumns returns the columns an update sets and its shape (per column: its kind
// if set, 'u' an unchanged TOASTed value, 'k' a key column left as it is, '=' an identity
// column left as it is), and whether it must be applied as a replace.
//
// PostgreSQL lets an UPDATE set a GENERATED ALWAYS identity column only to DEFAULT. Such a
// column is left out when it is known not to change: a key column of an update that keeps
// its key, or one whose old value the change carries (a key change, REPLICA IDENTITY FULL)
// and equals the new one. Otherwise (it changed, or its old value is not in the stream)
// the row is replaced: deleted and inserted again with OVERRIDING SYSTEM VALUE.
func (c *change) updateColumns() (set []int, shape string, replace bool) {
	rel := c.rel
	byOld := c.oldTup != nil
	sh := make([]byte, len(rel.cols))
	for i, v := range c.newTup {
		sh[i] = v.kind
		switch {
		case v.kind == 'u':
			continue
		case rel.isWhere[i] && !byOld:
			sh[i] = 'k'
			continue
		case rel.cols[i].identityAlways:
			if byOld && c.oldTup[i].kind == 't' && v.kind == 't' && bytes.Equal(c.oldTup[i].data, v.data) {
				sh[i] = '='
				continue
			}
			replace = true
		}
		set = append(set, i)
	}
	return set, string(sh), replace
}

// upsert writes the change's new row whole: op 'I' inserts it (see insertSQL), 'X' inserts
// or overwrites it (the overlap of a resumed copy).
//
// A row that enters the range by an UPDATE of its key arrives as an INSERT whose unchanged
// TOASTed values are not in the stream (PostgreSQL's own apply stores NULL there). Those
// values are read from the source as they are now: any later change of them is in the
// stream after this one, so the target converges. If the row is no longer in the range
// under this key, a later change in the stream deletes it or gives it a new key; until
// then it is a phantom, and that later change writes it whole in turn.
func (a *applier) upsert(ctx context.Context, c *change, op byte) error {
	rel := c.rel
	vals := make([][]byte, len(rel.cols))
	var missing []int
	for i, v := range c.newTup {
		switch v.kind {
		case 't':
			vals[i] = v.data
		case 'u':
			missing = append(missing, i)
		}
	}
	where, err := rel.keyOf(c.newTup)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		got, err := a.fetch(ctx, rel, missing, where)
		if err != nil {
			return err
		}
		if got == nil {
			a.log("row entered the range but has left it on the source; waiting for its next change", "table", rel.name)
			if op == 'X' {
				// A phantom is not on the target: the copy may hold it.
				key := phantomKeyOf(rel.dst.Name, where)
				a.forget(key)
				a.addRow(rel, 'Y', "", nil, where, key, c.size)
			}
			return a.setPhantom(ctx, rel, where, true)
		}
		for j, i := range missing {
			vals[i] = got[j]
		}
	}
	if err := a.setPhantom(ctx, rel, where, false); err != nil {
		return err
	}
	a.addRow(rel, op, "", nil, vals, phantomKeyOf(rel.dst.Name, where), c.size)
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
	arr := textArray(parts)
	a.batch.ExecPrepared(name, [][]byte{[]byte(a.id), []byte(rel.dst.Name), arr}, nil, nil)
	a.expect = append(a.expect, expectation{rows: -1})
	return nil
}

// textArray renders a text[] literal.
func textArray(vals []string) []byte {
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
	return []byte(b.String())
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// valuesList renders n rows of typed parameters: ($1::t1, $2::t2), ($3::t1, $4::t2), ...
func valuesList(types []string, n int) string {
	var b strings.Builder
	p := 1
	for r := 0; r < n; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, t := range types {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d::%s", p, t)
			p++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// groupSQL is the statement applying n rows of a group.
//
// INSERT is a plain insert. The copy holds exactly the rows committed before the slot's
// consistent point and the stream exactly those committed after it, and a resumed apply
// skips what it applied: a row being inserted is never on the target already, so a
// conflict means the target diverged and must stop the apply, not be papered over.
// UPDATE sets the columns that arrived (unchanged TOASTed ones are left out) on the rows
// found by their identity (the old key when the key changed); DELETE goes by identity.
func groupSQL(g *group, n int) string {
	rel := g.rel
	switch g.op {
	case 'I':
		cols := make([]string, len(rel.cols))
		types := make([]string, len(rel.cols))
		for i, c := range rel.cols {
			cols[i], types[i] = ident(c.name), c.typ
		}
		return fmt.Sprintf("INSERT INTO %s (%s)%s VALUES %s", rel.dst.Qualified(), strings.Join(cols, ", "), overriding(rel), valuesList(types, n))
	case 'X':
		return groupSQL(&group{rel: rel, op: 'I'}, n) + onConflict(rel)
	case 'Y':
		return groupSQL(&group{rel: rel, op: 'D'}, n)
	case 'K':
		return updateSQL(rel, g.set)
	case 'R':
		return replaceSQL(rel, g.set)
	case 'U':
		var types, alias, sets, conds []string
		for j, i := range g.set {
			types = append(types, rel.cols[i].typ)
			alias = append(alias, fmt.Sprintf("s%d", j))
			sets = append(sets, fmt.Sprintf("%s = v.s%d", ident(rel.cols[i].name), j))
		}
		for j, w := range rel.where {
			types = append(types, rel.cols[w].typ)
			alias = append(alias, fmt.Sprintf("w%d", j))
			conds = append(conds, fmt.Sprintf("t.%s = v.w%d", ident(rel.cols[w].name), j))
		}
		if n == 1 {
			return updateSQL(rel, g.set)
		}
		return fmt.Sprintf("UPDATE %s AS t SET %s FROM (VALUES %s) AS v(%s) WHERE %s", rel.dst.Qualified(),
			strings.Join(sets, ", "), valuesList(types, n), strings.Join(alias, ", "), strings.Join(conds, " AND "))
	case 'D':
		if n == 1 {
			return deleteSQL(rel)
		}
		var types, alias, conds []string
		for j, w := range rel.where {
			types = append(types, rel.cols[w].typ)
			alias = append(alias, fmt.Sprintf("w%d", j))
			conds = append(conds, fmt.Sprintf("t.%s = v.w%d", ident(rel.cols[w].name), j))
		}
		return fmt.Sprintf("DELETE FROM %s AS t USING (VALUES %s) AS v(%s) WHERE %s", rel.dst.Qualified(),
			valuesList(types, n), strings.Join(alias, ", "), strings.Join(conds, " AND "))
	}
	panic("mover: unknown group op " + string(g.op))
}

// onConflict makes an INSERT overwrite the row with the same primary key. GENERATED ALWAYS
// identity columns keep their value (an UPDATE may set them only to DEFAULT); they are
// part of the key where they are the usual id.
func onConflict(rel *relation) string {
	var pk, sets []string
	for _, c := range rel.cols {
		switch {
		case c.pk:
			pk = append(pk, ident(c.name))
		case !c.identityAlways:
			sets = append(sets, fmt.Sprintf("%s = EXCLUDED.%s", ident(c.name), ident(c.name)))
		}
	}
	if len(sets) == 0 {
		return fmt.Sprintf(" ON CONFLICT (%s) DO NOTHING", strings.Join(pk, ", "))
	}
	return fmt.Sprintf(" ON CONFLICT (%s) DO UPDATE SET %s", strings.Join(pk, ", "), strings.Join(sets, ", "))
}

// insertSQL inserts one row (see groupSQL).
func insertSQL(rel *relation) string { return groupSQL(&group{rel: rel, op: 'I'}, 1) }

func whereClause(rel *relation, first int) string {
	conds := make([]string, len(rel.where))
	for i, w := range rel.where {
		conds[i] = fmt.Sprintf("%s = $%d::%s", ident(rel.cols[w].name), first+i, rel.cols[w].typ)
	}
	return strings.Join(conds, " AND ")
}

// updateSQL sets the given columns of one row found by its identity.
func updateSQL(rel *relation, set []int) string {
	sets := make([]string, len(set))
	for j, i := range set {
		sets[j] = fmt.Sprintf("%s = $%d::%s", ident(rel.cols[i].name), j+1, rel.cols[i].typ)
	}
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s", rel.dst.Qualified(), strings.Join(sets, ", "), whereClause(rel, len(set)+1))
}

// overriding is the clause that lets an INSERT write the source's values into the target's
// GENERATED ALWAYS identity columns, as the copy's COPY FROM does.
func overriding(rel *relation) string {
	if rel.overriding {
		return " OVERRIDING SYSTEM VALUE"
	}
	return ""
}

// replaceSQL replaces one row found by its identity with one holding the given columns'
// new values and the old row's other values (unchanged TOASTed values, the key), in one
// statement: the way to change a GENERATED ALWAYS identity column (see updateColumns).
// Generated columns are computed again by the INSERT. It reports 1 row if the row was there.
func replaceSQL(rel *relation, set []int) string {
	param := map[int]int{}
	for j, i := range set {
		param[i] = j + 1
	}
	cols := make([]string, len(rel.cols))
	vals := make([]string, len(rel.cols))
	for i, c := range rel.cols {
		cols[i] = ident(c.name)
		vals[i] = "d." + ident(c.name)
		if p, ok := param[i]; ok {
			vals[i] = fmt.Sprintf("$%d::%s", p, c.typ)
		}
	}
	t := rel.dst.Qualified()
	return fmt.Sprintf("WITH d AS (DELETE FROM %s WHERE %s RETURNING *) INSERT INTO %s (%s)%s SELECT %s FROM d",
		t, whereClause(rel, len(set)+1), t, strings.Join(cols, ", "), overriding(rel), strings.Join(vals, ", "))
}

func deleteSQL(rel *relation) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s", rel.dst.Qualified(), whereClause(rel, 1))
}

// errStreamEnded is returned when the source ends the replication stream.
var errStreamEnded = errors.New("source: the server ended the replication stream")
