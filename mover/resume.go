package mover

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// A copy interrupted part way resumes with its unfinished chunks only (docs/mover.md,
// "Resumable copy"): the journal holds the chunks the first run cut and each one done,
// recorded after its rows committed on the target. The resumed run deletes what an
// unfinished chunk may have left on the target, copies those chunks from a new snapshot
// taken at source position L1, and the catch-up still starts at the slot's consistent
// point L0: the transactions committed between L0 and L1 are applied idempotently
// (inserts and updates write the whole row, deletes of missing rows do nothing), which
// leaves every row as it was on the source at L1 whichever snapshot it was copied from.

// copyPlanOf is the journal's record of a copy's chunks, none done yet.
func copyPlanOf(md *metadata, perTable [][]chunk) *catalog.CopyPlan {
	p := &catalog.CopyPlan{Runs: 1}
	for i, cs := range perTable {
		ct := catalog.CopyTable{Table: md.src[i].Name}
		for _, c := range cs {
			ct.Chunks = append(ct.Chunks, catalog.CopyChunk{Lo: c.lo, Hi: c.hi, Blocks: c.blocks, BlockLo: c.blockLo, BlockHi: c.blockHi})
		}
		p.Tables = append(p.Tables, ct)
	}
	return p
}

// chunkDone records a chunk whose rows are committed on the target.
func (m *Mover) chunkDone(ctx context.Context, c chunk, rows, bytes int64) error {
	return m.update(ctx, func(r *catalog.Migration) {
		if r.Copy == nil || c.ti >= len(r.Copy.Tables) || c.index >= len(r.Copy.Tables[c.ti].Chunks) {
			return
		}
		r.Copy = r.Copy.Clone()
		ch := &r.Copy.Tables[c.ti].Chunks[c.index]
		ch.Done, ch.Rows, ch.Bytes, ch.Run = true, rows, bytes, r.Copy.Runs
	})
}

// remaining rebuilds the chunks the interrupted copy has not finished, and the copy's
// counters with the finished ones counted. A table cut into heap blocks is copied again
// whole if any of its chunks is unfinished: a row updated since the first snapshot may
// have moved to another block. It reports false when the copy cannot resume: the plan does
// not match the tables, or a table to copy again has a unique index besides its primary
// key (replaying the overlap row by row could trip over it transiently).
func remaining(md *metadata, plan *catalog.CopyPlan) ([][]chunk, *copyStats, bool) {
	if plan == nil || len(plan.Tables) != len(md.src) {
		return nil, nil, false
	}
	st := &copyStats{start: time.Now(), tables: map[string]*tableStats{}}
	var perTable [][]chunk
	for i, ct := range plan.Tables {
		src, dst := md.src[i], md.dst[i]
		if ct.Table != src.Name || len(ct.Chunks) == 0 {
			return nil, nil, false
		}
		ts := &tableStats{chunksTotal: len(ct.Chunks)}
		st.order = append(st.order, src.Name)
		st.tables[src.Name] = ts
		whole := false
		for _, cc := range ct.Chunks {
			whole = whole || (cc.Blocks && !cc.Done)
		}
		var todo []chunk
		for j, cc := range ct.Chunks {
			if cc.Done && !whole {
				ts.rows.Add(cc.Rows)
				ts.bytes.Add(cc.Bytes)
				ts.chunksDone.Add(1)
				continue
			}
			todo = append(todo, chunk{src: src, dst: dst, ti: i, index: j, lo: cc.Lo, hi: cc.Hi,
				blocks: cc.Blocks, blockLo: cc.BlockLo, blockHi: cc.BlockHi, estBytes: cc.Bytes})
		}
		if len(todo) > 0 && (src.ExtraUnique || dst.ExtraUnique) {
			return nil, nil, false
		}
		perTable = append(perTable, todo)
	}
	return perTable, st, true
}

// resumeCopy continues an interrupted copy with its unfinished chunks, then launches the
// catch-up from the slot's consistent point. It reports false, having changed nothing,
// when the copy has to start over instead.
func (m *Mover) resumeCopy(ctx context.Context, rec *catalog.Migration) (bool, error) {
	if rec.Copy == nil || rec.ConsistentLSN == "" {
		return false, nil
	}
	consistent, err := pglogrepl.ParseLSN(rec.ConsistentLSN)
	if err != nil {
		return false, nil
	}
	if err := m.openPools(ctx); err != nil {
		return false, err
	}
	src, dst := m.pools()
	if s, err := readSlot(ctx, src, m.slot); err != nil || !s.exists || s.walStatus == "lost" {
		return false, err
	}
	md, err := m.tablesOf(ctx)
	if err != nil {
		return false, err
	}
	perTable, st, ok := remaining(md, rec.Copy)
	if !ok {
		return false, nil
	}
	total := 0
	for _, cs := range perTable {
		total += len(cs)
	}
	workers, err := m.openWorkers(ctx, max(1, min(m.cfg.copyWorkers(), total)))
	defer func() {
		for _, w := range workers {
			closeQuietly(w.src)
			closeQuietly(w.dst)
		}
	}()
	if err != nil {
		return false, err
	}
	for _, w := range workers {
		if !w.replica {
			// The overlap's replay and the deletes below ignore foreign keys.
			return false, nil
		}
	}
	began := time.Now()
	m.log.Info("resuming the interrupted copy", "chunks_left", total, "rows_done", st.rows())
	rangePred := m.cfg.pred
	if err := m.clearUnfinished(ctx, workers[0].dst, perTable, rangePred); err != nil {
		return true, err
	}
	m.mu.Lock()
	m.copyStat = st
	m.mu.Unlock()
	overlap, err := m.shareNewSnapshot(ctx, workers, rec.Copy.OverlapLSN)
	if err != nil {
		return true, err
	}
	if err := m.runChunks(ctx, workers, stages(perTable, true), rangePred, st); err != nil {
		return true, err
	}
	if err := m.finishCopy(ctx, dst, workers, consistent); err != nil {
		return true, err
	}
	if err := m.recordCopyDone(ctx, consistent, st, began); err != nil {
		return true, err
	}
	m.log.Info("copy done (resumed)", "rows", st.rows(), "overlap_until", overlap, "seconds", time.Since(began).Seconds())
	m.overlap = overlap
	m.setApplied(consistent, time.Now())
	m.launchCatchup(ctx)
	return true, nil
}

// tablesOf reads the move's tables on both sides (the first run's preflight checked them;
// the slot and the copied rows it would now object to are this migration's own).
func (m *Mover) tablesOf(ctx context.Context) (*metadata, error) {
	src, dst := m.pools()
	md := &metadata{}
	for _, name := range m.cfg.Tables {
		s, err := loadTable(ctx, src, name)
		if err != nil {
			return nil, fmt.Errorf("source: table %s: %w", name, err)
		}
		d, err := loadTable(ctx, dst, name)
		if err != nil {
			return nil, fmt.Errorf("target: table %s: %w", name, err)
		}
		if p := diffColumns(s, d); len(p) > 0 {
			return nil, fmt.Errorf("target: table %s changed since the copy began: %s", name, p[0])
		}
		md.src, md.dst = append(md.src, s), append(md.dst, d)
	}
	return md, nil
}

// clearUnfinished deletes from the target what unfinished chunks may have left there (a
// chunk committed just before the crash, before the journal recorded it): each key chunk's
// rows, or the range's rows of a table copied by blocks.
func (m *Mover) clearUnfinished(ctx context.Context, conn *pgx.Conn, perTable [][]chunk, rangePred func(*table) string) error {
	for i := len(perTable) - 1; i >= 0; i-- {
		for _, c := range perTable[i] {
			pred := func(t *table) string { return rangePred(t) }
			if p := c.predicate(); p != "" && !c.blocks {
				pred = func(t *table) string { return rangePred(t) + " AND " + p }
			}
			d := rangeDeleter{pool: conn, pred: pred, migration: m.cfg.ID, token: m.cfg.Token, log: m.log}
			if err := d.run(ctx, []*table{c.dst}); err != nil {
				return err
			}
			if c.blocks {
				break // the table's whole range is gone
			}
		}
	}
	return nil
}

// shareNewSnapshot has every worker import one new snapshot of the source and records, as
// the journal's overlap position, a source position at or after every commit the snapshot
// sees (and never below an earlier resume's). It returns that position.
func (m *Mover) shareNewSnapshot(ctx context.Context, workers []*worker, prev string) (pglogrepl.LSN, error) {
	conn, err := connect(ctx, source, m.cfg.SourceDSN, appName(m.cfg.ID, "snapshot"))
	if err != nil {
		return 0, err
	}
	defer closeQuietly(conn)
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"); err != nil {
		return 0, fmt.Errorf("source: begin the resumed copy's snapshot: %w", err)
	}
	// The snapshot is taken as this statement starts; the position is read after that,
	// so every commit the snapshot sees lies before it.
	var pos, snapshot string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text, pg_export_snapshot()").Scan(&pos, &snapshot); err != nil {
		return 0, fmt.Errorf("source: export the resumed copy's snapshot: %w", err)
	}
	overlap, err := pglogrepl.ParseLSN(pos)
	if err != nil {
		return 0, fmt.Errorf("source: bad WAL position %q: %w", pos, err)
	}
	if p, err := pglogrepl.ParseLSN(prev); err == nil && p > overlap {
		overlap = p
	}
	for _, w := range workers {
		_, err := w.src.PgConn().Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot)).ReadAll()
		if err != nil {
			return 0, fmt.Errorf("source: import snapshot %s: %w", snapshot, err)
		}
	}
	err = m.update(ctx, func(r *catalog.Migration) {
		r.Copy = r.Copy.Clone()
		if r.Copy == nil {
			return
		}
		r.Copy.Runs++
		r.Copy.OverlapLSN = overlap.String()
		r.Snapshot = snapshot
	})
	return overlap, err
}

// overlapOf is the overlap position a migration's journal records (0: none).
func overlapOf(rec *catalog.Migration) pglogrepl.LSN {
	if rec == nil || rec.Copy == nil {
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(rec.Copy.OverlapLSN)
	if err != nil {
		return 0
	}
	return lsn
}
