package mover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"golang.org/x/sync/errgroup"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/clock"
)

// launchCatchup starts the catch-up goroutine and its checkpointer.
func (m *Mover) launchCatchup(ctx context.Context) {
	done := make(chan struct{})
	m.mu.Lock()
	m.done, m.running = done, true
	m.catchupFrom = time.Now()
	m.mu.Unlock()
	go func() {
		defer close(done)
		stop := make(chan struct{})
		cpDone := make(chan struct{})
		go func() {
			defer close(cpDone)
			m.watchCatchup(ctx, stop)
		}()
		err := m.runCatchup(ctx)
		close(stop)
		<-cpDone
		if err != nil {
			// In the journal before anyone waiting is told: whoever stops on it (and
			// exits) leaves the reason for `reshard status`.
			m.log.Error("catch-up stopped", "err", err)
			m.noteError(err)
		}
		m.mu.Lock()
		m.running = false
		if err != nil {
			m.fatal = err
		}
		close(m.notify) // wake WaitApplied to see the end
		m.notify = make(chan struct{})
		m.mu.Unlock()
	}()
}

// runCatchup runs replication sessions until ctx ends, reconnecting with backoff after
// errors a reconnect may cure; it returns the fatal error that stopped it, if any.
func (m *Mover) runCatchup(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		began := time.Now()
		err := m.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errStreamEnded
		}
		var mc *missingColumnError
		if errors.As(err, &mc) {
			m.waitForColumn(ctx, mc)
			backoff = 100 * time.Millisecond
			continue
		}
		if m.slotLost(ctx) {
			// The source says only that it cannot read the slot; its own catalog says why.
			return slotInvalidated(m.slot, m.cfg.ID)
		}
		if !transient(err) {
			return err
		}
		msg := err.Error()
		m.lastErr.Store(&msg)
		if time.Since(began) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		m.log.Warn("catch-up interrupted; reconnecting", "err", err, "in", backoff)
		if clock.Sleep(ctx, backoff) != nil {
			return nil
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session is one replication connection and one apply connection, from the applied
// position to the first error.
func (m *Mover) session(ctx context.Context) error {
	cfg := m.cfg
	conn, err := connect(ctx, target, cfg.TargetDSN, appName(cfg.ID, "apply"))
	if err != nil {
		return err
	}
	defer closeQuietly(conn)
	replica, err := setupTargetSession(ctx, conn)
	if err != nil {
		return err
	}
	// The applied LSN is acknowledged to the source once committed here: the commit must
	// be durable, whatever the server's default.
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	// The apply's statements are planned once: a custom plan per execution would cost
	// more than applying the rows (the plan of a multi-row UPDATE is the same every time).
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	tables := map[string]*table{}
	for _, name := range cfg.Tables {
		t, err := loadTable(ctx, conn, name)
		if err != nil {
			if errors.Is(err, errNoTable) {
				return fatalf("target: table %s does not exist any more", name)
			}
			return fmt.Errorf("target: %w", err)
		}
		tables[t.Schema+"."+t.Rel] = t
	}
	progress, _, err := readProgress(ctx, conn, cfg.ID)
	if err != nil {
		return err
	}
	phantoms, err := loadPhantoms(ctx, conn, cfg.ID)
	if err != nil {
		return err
	}
	m.setApplied(progress, time.Now())
	start := m.AppliedLSN()

	repl, err := connectReplication(ctx, cfg.SourceDSN, appName(cfg.ID, "catchup"))
	if err != nil {
		return err
	}
	defer closeReplQuietly(repl)
	err = pglogrepl.StartReplication(ctx, repl, m.slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		// Plugin arguments go to the server verbatim: values must be quoted. Protocol 1
		// is what pglogrepl decodes completely; large transactions are not streamed.
		// Messages carry the TRUNCATE notices of partitions (truncate.go).
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(m.pub), "messages 'true'"},
	})
	if err != nil {
		return classifyStreamErr(fmt.Errorf("start replication from %s: %w", start, err))
	}
	m.log.Debug("replication started", "from", start)

	segs := make(chan []segment, 16)
	g, gctx := errgroup.WithContext(ctx)
	eager := func() bool { return m.waiters.Load() > 0 }
	rcv := &receiver{id: cfg.ID, conn: repl, tables: tables, key: cfg.keyspace(), start: start, applied: m.AppliedLSN, th: m.th, out: segs,
		eager: eager}
	app := newApplier(conn, cfg.ID, replica, phantoms, m.fetchRow, func(lsn pglogrepl.LSN, at time.Time, txs int) {
		m.appliedTxs.Add(int64(txs))
		m.setApplied(lsn, at)
	}, func(msg string, args ...any) { m.log.Debug(msg, args...) })
	app.token, app.overlap = cfg.Token, m.overlap
	app.hold, app.record, app.eager = m.currentHold, m.recorder, eager
	g.Go(func() error { return rcv.run(gctx) })
	g.Go(func() error {
		err := app.run(gctx, segs)
		if err == nil {
			// The stream ended; the receiver's error says why.
			return nil
		}
		return err
	})
	err = g.Wait()
	if err == nil {
		err = errStreamEnded
	}
	return err
}

// waitForColumn says, once, in the log and the journal, which column the target lacks and
// the DDL that gives it, then polls the target's catalog until the column is there (or ctx
// ends). The next session starts again from reshard.progress, so nothing is lost.
func (m *Mover) waitForColumn(ctx context.Context, mc *missingColumnError) {
	src, dst := m.pools()
	if src == nil || dst == nil {
		return
	}
	if ddl, err := columnDDL(ctx, src, mc.table, mc.column); err == nil {
		mc.ddl = ddl
	}
	msg := mc.Error()
	m.lastErr.Store(&msg)
	m.log.Warn(msg)
	m.noteError(mc)
	for clock.Sleep(ctx, time.Second) == nil {
		t, err := loadTable(ctx, dst, mc.table.Name)
		if err == nil && t.column(mc.column) != nil {
			m.log.Info("the target has the new column; the catch-up goes on", "table", mc.table.Name, "column", mc.column)
			m.lastErr.Store(nil)
			_ = m.update(ctx, func(r *catalog.Migration) {
				if r.LastError == msg {
					r.LastError = ""
				}
			})
			return
		}
	}
}

// slotLost reports whether the source has invalidated the move's slot (a failed read of
// the slot, as while the source restarts, is not a verdict).
func (m *Mover) slotLost(ctx context.Context) bool {
	src, _ := m.pools()
	if src == nil {
		return false
	}
	s, err := readSlot(ctx, src, m.slot)
	return err == nil && s.exists && s.walStatus == "lost"
}

// fetchRow reads the current values of some columns of one row from the source, if the
// row is (still) in the range.
func (m *Mover) fetchRow(ctx context.Context, rel *relation, cols []int, where [][]byte) ([][]byte, error) {
	src, _ := m.pools()
	if src == nil {
		return nil, errors.New("source: control connection closed")
	}
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = ident(rel.cols[c].name) + "::text"
	}
	args := make([]any, len(where))
	for i, v := range where {
		args[i] = string(v)
	}
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s AND %s", strings.Join(sel, ", "), rel.dst.Qualified(),
		whereClause(rel, 1), m.cfg.pred(rel.dst))
	rows, err := src.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("source: read unchanged values of a row of %s: %w", rel.name, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]*string, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, fmt.Errorf("source: read unchanged values of a row of %s: %w", rel.name, err)
	}
	out := make([][]byte, len(cols))
	for i, v := range vals {
		if v != nil {
			out[i] = []byte(*v)
		}
	}
	return out, rows.Err()
}

// watchCatchup reports progress every second and checkpoints the journal every few.
func (m *Mover) watchCatchup(ctx context.Context, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSave time.Time
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		lagB, lagS, err := m.Lag(ctx)
		if err != nil {
			continue
		}
		m.rate.sample(time.Now(), m.AppliedLSN(), lagB)
		m.report(Progress{ID: m.cfg.ID, Phase: catalog.PhaseCatchingUp, AppliedLSN: m.AppliedLSN(),
			AppliedTxs: m.appliedTxs.Load(), LagBytes: lagB, LagSeconds: lagS})
		if time.Since(lastSave) >= 5*time.Second {
			lastSave = time.Now()
			if err := m.checkpoint(ctx, true); err != nil && ctx.Err() == nil {
				m.log.Warn("checkpoint the catch-up", "err", err)
			}
		}
	}
}
