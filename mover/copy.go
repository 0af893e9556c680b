package mover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
)

// tableStats counts one table's copy.
type tableStats struct {
	rows, bytes atomic.Int64
	chunksDone  atomic.Int64
	chunksTotal int
	estBytes    int64
}

// copyStats is the copy's progress, read by the progress reporter and the checkpoints.
type copyStats struct {
	start  time.Time
	order  []string
	tables map[string]*tableStats
}

func (s *copyStats) rows() int64 {
	return s.sum(func(t *tableStats) *atomic.Int64 { return &t.rows })
}

func (s *copyStats) bytes() int64 {
	return s.sum(func(t *tableStats) *atomic.Int64 { return &t.bytes })
}

// sum adds one counter over the tables; a nil copyStats (no copy yet) counts nothing.
func (s *copyStats) sum(counter func(*tableStats) *atomic.Int64) (n int64) {
	if s == nil {
		return 0
	}
	for _, t := range s.tables {
		n += counter(t).Load()
	}
	return n
}

// record writes the counters into the migration record.
func (s *copyStats) record(r *catalog.Migration) {
	if s == nil {
		return
	}
	r.Tables = map[string]catalog.TableProgress{}
	for name, t := range s.tables {
		r.Tables[name] = catalog.TableProgress{Rows: t.rows.Load(), Bytes: t.bytes.Load(), ChunksDone: int(t.chunksDone.Load()), ChunksTotal: t.chunksTotal}
	}
	r.RowsCopied, r.BytesCopied = s.rows(), s.bytes()
}

func (s *copyStats) progress(id string) Progress {
	p := Progress{ID: id, Phase: catalog.PhaseCopying, Tables: map[string]catalog.TableProgress{}}
	for name, t := range s.tables {
		tp := catalog.TableProgress{Rows: t.rows.Load(), Bytes: t.bytes.Load(), ChunksDone: int(t.chunksDone.Load()), ChunksTotal: t.chunksTotal}
		p.Tables[name] = tp
		p.RowsCopied += tp.Rows
		p.BytesCopied += tp.Bytes
		p.ChunksDone += tp.ChunksDone
		p.ChunksTotal += tp.ChunksTotal
		p.BytesTotal += t.estBytes
	}
	if el := time.Since(s.start).Seconds(); el > 0 {
		p.Rate = float64(p.BytesCopied) / el
	}
	if p.BytesTotal < p.BytesCopied {
		p.BytesTotal = p.BytesCopied
	}
	if p.Rate > 0 && p.BytesTotal > p.BytesCopied {
		p.ETA = time.Duration(float64(p.BytesTotal-p.BytesCopied) / p.Rate * float64(time.Second))
	}
	return p
}

func (m *Mover) copyStats() *copyStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.copyStat
}

// worker is one copy worker: a source connection inside the snapshot's transaction and a
// target connection that loads the chunks.
type worker struct {
	src, dst *pgx.Conn
	replica  bool
}

// copy creates the publication and the slot and copies the range as of the slot's
// consistent point. It returns that point, from which the catch-up starts.
func (m *Mover) copy(ctx context.Context, md *metadata) (pglogrepl.LSN, error) {
	cfg := m.cfg
	src, dst := m.pools()
	rangePred := cfg.pred
	if err := m.prepareTarget(ctx, dst, md, rangePred); err != nil {
		return 0, err
	}

	// Plan the chunks before the slot exists: the snapshot then waits for nothing.
	began := time.Now()
	perTable, st, total, err := m.planCopy(ctx, src, md, rangePred)
	if err != nil {
		return 0, err
	}
	nw := min(cfg.copyWorkers(), total)
	m.mu.Lock()
	m.copyStat = st
	m.mu.Unlock()

	planned := time.Now()
	workers, err := m.openWorkers(ctx, nw)
	defer func() {
		for _, w := range workers {
			closeQuietly(w.src)
			closeQuietly(w.dst)
		}
	}()
	if err != nil {
		return 0, err
	}
	consistent, snapshot, opened, err := m.shareSnapshot(ctx, src, md, workers)
	if err != nil {
		return 0, err
	}
	m.log.Info("slot created", "slot", m.slot, "consistent_lsn", consistent, "workers", nw, "chunks", total,
		"plan_s", planned.Sub(began).Seconds(), "connect_s", opened.Sub(planned).Seconds(), "slot_s", time.Since(opened).Seconds())
	if err := m.update(ctx, func(r *catalog.Migration) {
		r.ConsistentLSN, r.Snapshot = consistent.String(), snapshot
		r.Copy = copyPlanOf(md, perTable)
	}); err != nil {
		return 0, err
	}

	replica := true
	for _, w := range workers {
		replica = replica && w.replica
	}
	if err := m.runChunks(ctx, workers, stages(perTable, replica), rangePred, st); err != nil {
		return 0, err
	}
	if err := m.finishCopy(ctx, dst, workers, consistent); err != nil {
		return 0, err
	}
	return consistent, nil
}

// prepareTarget readies the target for the copy: the progress table, the range's old rows
// deleted under --overwrite, and the claim that fences the range there.
func (m *Mover) prepareTarget(ctx context.Context, dst *pgxpool.Pool, md *metadata, rangePred func(*table) string) error {
	cfg := m.cfg
	if err := ensureProgressTable(ctx, dst); err != nil {
		return err
	}
	if cfg.Overwrite {
		children := make([]*table, 0, len(md.dst))
		for i := len(md.dst) - 1; i >= 0; i-- {
			children = append(children, md.dst[i])
		}
		d := rangeDeleter{pool: dst, pred: rangePred, migration: cfg.ID, token: cfg.Token, log: m.log}
		if err := d.run(ctx, children); err != nil {
			return err
		}
	}
	return claimTarget(ctx, dst, cfg.ID, m.log)
}

// planCopy cuts every table's part of the range into chunks for the configured number of
// workers and sets up the counters of the copy.
func (m *Mover) planCopy(ctx context.Context, src *pgxpool.Pool, md *metadata, rangePred func(*table) string) ([][]chunk, *copyStats, int, error) {
	nw := m.cfg.copyWorkers()
	st := &copyStats{start: time.Now(), tables: map[string]*tableStats{}}
	var perTable [][]chunk
	total := 0
	share := (nw + len(md.src) - 1) / len(md.src)
	for i, t := range md.src {
		cs, est, err := planChunks(ctx, src, t, md.dst[i], rangePred, nw, share)
		if err != nil {
			return nil, nil, 0, err
		}
		by := "key"
		if cs[0].blocks {
			by = "blocks"
		}
		m.log.Info("copy plan", "table", t.Name, "chunks", len(cs), "by", by, "est_bytes", est)
		for j := range cs {
			cs[j].ti, cs[j].index = i, j
		}
		perTable = append(perTable, cs)
		st.order = append(st.order, t.Name)
		st.tables[t.Name] = &tableStats{chunksTotal: len(cs), estBytes: est}
		total += len(cs)
	}
	return perTable, st, total, nil
}

// shareSnapshot creates the publication and the slot, and has every worker import the
// slot's snapshot. It returns the slot's consistent point, the snapshot's name and when
// the publication was made (for the copy's timings).
func (m *Mover) shareSnapshot(ctx context.Context, src *pgxpool.Pool, md *metadata, workers []*worker) (pglogrepl.LSN, string, time.Time, error) {
	cfg := m.cfg
	if err := createPublication(ctx, src, m.pub, cfg.keyspace(), cfg.Range, md.src, m.log); err != nil {
		return 0, "", time.Time{}, err
	}
	opened := time.Now()
	repl, err := connectReplication(ctx, cfg.SourceDSN, appName(cfg.ID, "slot"))
	if err != nil {
		return 0, "", opened, err
	}
	defer closeReplQuietly(repl)
	consistent, snapshot, err := createSlot(ctx, repl, m.slot)
	if err != nil {
		return 0, "", opened, err
	}
	// Every worker imports the snapshot before anything else is sent on the replication
	// connection: the next command there, even a failed one, would end the snapshot.
	g, gctx := errgroup.WithContext(ctx)
	for _, w := range workers {
		g.Go(func() error {
			_, err := w.src.PgConn().Exec(gctx, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshot)).ReadAll()
			if err != nil {
				return fmt.Errorf("source: import snapshot %s: %w", snapshot, err)
			}
			return nil
		})
	}
	return consistent, snapshot, opened, g.Wait()
}

// finishCopy ends the workers' snapshot transactions and makes the copied rows durable
// before the catch-up starts from consistent.
func (m *Mover) finishCopy(ctx context.Context, dst *pgxpool.Pool, workers []*worker, consistent pglogrepl.LSN) error {
	for _, w := range workers {
		// Read-only: the end of the snapshot's transaction.
		if _, err := w.src.Exec(ctx, "COMMIT"); err != nil {
			return fmt.Errorf("source: end the copy transaction: %w", err)
		}
	}
	// The copy sessions commit asynchronously; this synchronous commit flushes the
	// target's WAL past all of them before the journal says the copy is done.
	if _, err := dst.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return resetProgress(ctx, dst, m.cfg.ID, consistent)
}

// openWorkers opens n source and n target connections and prepares their sessions.
func (m *Mover) openWorkers(ctx context.Context, n int) ([]*worker, error) {
	workers := make([]*worker, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range workers {
		w := &worker{}
		workers[i] = w
		g.Go(func() (err error) {
			// A long copy must not be cut by the role's timeouts.
			if w.src, err = connect(gctx, source, m.cfg.SourceDSN, appName(m.cfg.ID, "copy"),
				"statement_timeout", "0", "idle_in_transaction_session_timeout", "0"); err != nil {
				return err
			}
			// A chunk's commit is durable before the journal records the chunk done (one
			// flush per chunk of tens of megabytes): a resumed copy trusts that record.
			if w.dst, err = connect(gctx, target, m.cfg.TargetDSN, appName(m.cfg.ID, "copy"), "synchronous_commit", "on"); err != nil {
				return err
			}
			w.replica, err = setupTargetSession(gctx, w.dst)
			return err
		})
	}
	err := g.Wait()
	if err == nil && !workers[0].replica {
		m.log.Warn("the target role may not set session_replication_role; tables are copied one after the other in the given order so that foreign keys hold")
	}
	return workers, err
}

// stages orders the chunks: in replica mode, where foreign keys are not checked, all at
// once, largest first, tables interleaved; otherwise table by table, parents first.
func stages(perTable [][]chunk, replica bool) [][]chunk {
	if !replica {
		return perTable
	}
	var all []chunk
	for _, cs := range perTable {
		all = append(all, cs...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].index != all[j].index {
			return all[i].index < all[j].index
		}
		return all[i].estBytes > all[j].estBytes
	})
	return [][]chunk{all}
}

// runChunks runs the stages one after the other over the workers.
//
// Workers spread over tables first: at most ceil(workers/tables) chunks of one table copy
// at once. One table's chunks loaded side by side insert into different parts of its
// indexes at once, which costs the target markedly more than loading in key order (no
// right-most page fast path, half-full page splits; measured: about 45% more target CPU
// with two concurrent chunks per table); so a table is split across workers only when
// there are more workers than tables, as for one huge tenant table.
func (m *Mover) runChunks(ctx context.Context, workers []*worker, stages [][]chunk, rangePred func(*table) string, st *copyStats) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan chunk)
	done := make(chan *table, len(workers))
	for _, w := range workers {
		g.Go(func() error {
			for c := range jobs {
				if err := m.copyChunk(gctx, w, c, rangePred, st.tables[c.src.Name]); err != nil {
					return err
				}
				select {
				case done <- c.src:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		for _, stage := range stages {
			queue := append([]chunk(nil), stage...)
			tables := map[*table]bool{}
			for _, c := range queue {
				tables[c.src] = true
			}
			perTable := (len(workers) + len(tables) - 1) / max(len(tables), 1)
			inflight := map[*table]int{}
			pending := 0
			for len(queue) > 0 || pending > 0 { // a stage ends when all its chunks are done
				var send chan chunk
				var next chunk
				at := -1
				for i, c := range queue {
					if inflight[c.src] < perTable {
						send, next, at = jobs, c, i
						break
					}
				}
				select {
				case send <- next:
					queue = append(queue[:at], queue[at+1:]...)
					inflight[next.src]++
					pending++
				case t := <-done:
					inflight[t]--
					pending--
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	stop := make(chan struct{})
	watch := make(chan error, 1)
	go func() { watch <- m.watchCopy(gctx, stop) }()
	err := g.Wait()
	close(stop)
	if werr := <-watch; err == nil && werr != nil {
		err = werr
	}
	return err
}

// copyChunk streams one chunk from the source's COPY TO into the target's COPY FROM
// through the relay (relay.go): rows are never decoded and memory stays at one buffer.
func (m *Mover) copyChunk(ctx context.Context, w *worker, c chunk, rangePred func(*table) string, ts *tableStats) error {
	cols := c.src.copyColumns()
	q := make([]string, len(cols))
	for i, col := range cols {
		q[i] = ident(col)
	}
	colList := strings.Join(q, ", ")
	format := "binary"
	if !c.src.binarySafe() || !c.dst.binarySafe() {
		format = "text" // binary COPY carries type OIDs of composites and arrays of user types
	}
	where := rangePred(c.src)
	if p := c.predicate(); p != "" {
		where += " AND " + p
	}
	out := fmt.Sprintf("COPY (SELECT %s FROM %s WHERE %s) TO STDOUT (FORMAT %s)", colList, c.src.Qualified(), where, format)
	in := fmt.Sprintf("COPY %s (%s) FROM STDIN (FORMAT %s)", c.dst.Qualified(), colList, format)

	var chunkBytes int64
	meter := func(ctx context.Context, n int) error {
		if err := m.th.waitUnpaused(ctx); err != nil {
			return err
		}
		if err := m.th.wait(ctx, n); err != nil {
			return err
		}
		// A pause that began during the rate wait holds these bytes too: a read is up
		// to 256 KiB, half a second at a low --max-rate.
		if err := m.th.waitUnpaused(ctx); err != nil {
			return err
		}
		ts.bytes.Add(int64(n))
		chunkBytes += int64(n)
		return nil
	}
	if m.cfg.Token != 0 {
		// The chunk and the token check commit together: a driver that lost its lock to
		// a newer one copies nothing more into the target.
		if _, err := w.dst.Exec(ctx, "BEGIN"); err != nil {
			return fmt.Errorf("target: copy %s (chunk %d): %w", c.dst.Name, c.index, err)
		}
		if err := checkToken(ctx, w.dst, m.cfg.ID, m.cfg.Token); err != nil {
			return &fatalError{fmt.Errorf("target: copy %s (chunk %d): %w", c.dst.Name, c.index, err)}
		}
	}
	rows, err := relayCopy(ctx, w.src.PgConn(), w.dst.PgConn(), out, in, meter)
	if err == nil && m.cfg.Token != 0 {
		if _, cerr := w.dst.Exec(ctx, "COMMIT"); cerr != nil {
			err = &relayError{side: "target", err: cerr}
		}
	}
	if err != nil {
		var re *relayError
		if errors.As(err, &re) && re.side == "target" {
			return fmt.Errorf("target: copy %s (chunk %d): %w", c.dst.Name, c.index, re.err)
		}
		if errors.As(err, &re) {
			return fmt.Errorf("source: copy %s (chunk %d): %w", c.src.Name, c.index, re.err)
		}
		return fmt.Errorf("copy %s (chunk %d): %w", c.src.Name, c.index, err)
	}
	ts.rows.Add(rows)
	ts.chunksDone.Add(1)
	// Only now, with the chunk committed on the target: a chunk the journal calls done is
	// there, and one copied but not recorded is deleted and copied again by a resume.
	return m.chunkDone(ctx, c, rows, chunkBytes)
}

// watchCopy runs beside the copy: it reports progress, checkpoints the counters, pauses
// the copy while another slot lags too much, and fails the copy if the source invalidates
// the mover's slot (the WAL it holds exceeded max_slot_wal_keep_size).
func (m *Mover) watchCopy(ctx context.Context, stop <-chan struct{}) error {
	src, _ := m.pools()
	st := m.copyStats()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastCheck, lastSave time.Time
	for {
		select {
		case <-stop:
			m.th.paused.Store(false)
			m.report(st.progress(m.cfg.ID))
			return nil
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		m.report(st.progress(m.cfg.ID))
		if time.Since(lastSave) >= 2*time.Second {
			lastSave = time.Now()
			if err := m.update(ctx, st.record); err != nil {
				m.log.Warn("checkpoint the copy", "err", err)
			}
		}
		if time.Since(lastCheck) < time.Second {
			continue
		}
		lastCheck = time.Now()
		s, err := readSlot(ctx, src, m.slot)
		if err == nil && s.walStatus == "lost" {
			return slotInvalidated(m.slot, m.cfg.ID)
		}
		if m.cfg.MaxSourceLag <= 0 {
			continue
		}
		var lag int64
		err = src.QueryRow(ctx, `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0)::bigint
			FROM pg_replication_slots WHERE slot_name <> $1 AND restart_lsn IS NOT NULL`, m.slot).Scan(&lag)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("measure the source's slot lag", "err", err)
			continue
		}
		paused := lag > m.cfg.MaxSourceLag
		if paused != m.th.paused.Load() {
			m.log.Info("copy throttled by source slot lag", "paused", paused, "lag_bytes", lag, "max", m.cfg.MaxSourceLag)
		}
		m.th.paused.Store(paused)
	}
}

func (m *Mover) report(p Progress) {
	if m.cfg.Progress != nil {
		m.cfg.Progress(p)
	}
}
