package cutover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
)

// ApplyHolder is a Replicator that can stop its apply at an exact source position and
// record the rows it applies from there (mover.Mover implements it). With one, a cutover
// verifies the whole range online before the freeze, and in the window compares only the
// rows changed since; without, it hashes the whole range in the window.
type ApplyHolder interface {
	// HoldApply stops the apply at the first boundary between source transactions at
	// or past from; calls position, which returns the exact position L (at least from);
	// lets the apply go on to L and holds it there while at runs; then records every row
	// the apply changes.
	HoldApply(ctx context.Context, from pglogrepl.LSN, position func(context.Context) (pglogrepl.LSN, error), at func(context.Context) error) error
	// ChangedKeys is every row the apply changed since the last hold's position: per
	// table, its identity columns and each row's values of them as text; changes counts
	// every row change. ok is false past the record's bound or without a hold.
	ChangedKeys() (cols map[string][]string, keys map[string][][]string, changes int64, ok bool)
}

// snapshotConn is a connection of an online verification: its own, opened with the
// settings of a shard's control connection, closed when the verification ends.
func snapshotConn(ctx context.Context, like Querier) (*pgx.Conn, error) {
	cc, ok := like.(interface{ Config() *pgx.ConnConfig })
	if !ok {
		return nil, fmt.Errorf("cutover: the online verify needs a *pgx.Conn to take its settings from, not %T", like)
	}
	c, err := pgx.ConnectConfig(ctx, cc.Config().Copy())
	if err != nil {
		return nil, err
	}
	// Rows of types without a hash function are hashed as text: in the same styles on
	// both sides whatever the servers' defaults. Set before the snapshot's transaction,
	// whose first statement must be SET TRANSACTION SNAPSHOT.
	if _, err := c.Exec(ctx, textStyleSQL); err != nil {
		c.Close(ctx)
		return nil, err
	}
	// A chunk is a key sub-range: read it through the primary key's index, in its order,
	// never by scanning and sorting the range. The planner misjudges a row comparison's
	// rows (it took a third of the table for a chunk's 10,000) and would otherwise read
	// the range's whole rest for every chunk (measured: 0.85 s a chunk of a 200k-row
	// range, against 12 ms). The penalties make the cost look huge, which would compile
	// every chunk's statement with JIT (1.6 s each, measured): no JIT.
	if _, err := c.Exec(ctx, "SET enable_sort = off; SET enable_seqscan = off; SET max_parallel_workers_per_gather = 0; SET jit = off"); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return c, nil
}

func repeatableRead(ctx context.Context, c *pgx.Conn) (pgx.Tx, error) {
	return c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
}

// insertLSN reads the source's WAL insert position: every commit so far is before it.
func insertLSN(ctx context.Context, db Querier) (pglogrepl.LSN, error) {
	var s string
	if err := db.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("source: read the WAL position: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}

// exportedSnapshot makes c's new REPEATABLE READ transaction hold exactly the source
// transactions that commit before a position L, and returns L: a temporary logical slot,
// created on a replication connection with the settings of c, exports its snapshot at its
// consistent point; c imports it before anything else is sent on the replication
// connection (which would end the export), and closing that connection drops the slot.
// Creating the slot waits for the transactions running on the source to end.
func exportedSnapshot(ctx context.Context, c *pgx.Conn) (pgx.Tx, pglogrepl.LSN, error) {
	rc := c.Config().Copy()
	rc.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, &rc.Config)
	if err != nil {
		return nil, 0, fmt.Errorf("source: open a replication connection (the role needs REPLICATION, the server a free WAL sender): %w", err)
	}
	defer repl.Close(context.WithoutCancel(ctx))
	var b [6]byte
	_, _ = rand.Read(b[:])
	slot := "reshard_verify_" + hex.EncodeToString(b[:])
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("source: create a temporary replication slot for the online verify (it needs a free slot): %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, 0, fmt.Errorf("source: bad consistent point %q: %w", res.ConsistentPoint, err)
	}
	tx, err := repeatableRead(ctx, c)
	if err != nil {
		return nil, 0, fmt.Errorf("source: %w", err)
	}
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(res.SnapshotName)); err != nil {
		_ = tx.Rollback(ctx)
		return nil, 0, fmt.Errorf("source: import the snapshot: %w", err)
	}
	return tx, lsn, nil
}

func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// newOnlinePlan reads on the source what both sides hash: columns, primary keys, and which
// tables hash through text.
func newOnlinePlan(ctx context.Context, src Querier, keys catalog.Keyspace, tables []string, r catalog.KeyRange) (*onlinePlan, error) {
	cols, err := ReadColumns(ctx, src, tables)
	if err != nil {
		return nil, err
	}
	pks, err := readPrimaryKeys(ctx, src, tables)
	if err != nil {
		return nil, err
	}
	text, err := hashModes(ctx, src, keys, tables, cols, r)
	if err != nil {
		return nil, err
	}
	return &onlinePlan{keys: keys, r: r, tables: tables, cols: cols, pks: pks, text: text}, nil
}

// VerifyAt verifies range r online between the source and the target of a migration
// whose apply h runs: both sides are read from snapshots that hold exactly the source
// transactions that commit before one position L (the result's LSN), taken while writes
// and the apply go on; the apply holds at L only while the target's snapshot is taken.
// From L on, h records the rows it applies, which the cutover compares in its window. A
// difference is ErrMismatch naming the differing keys.
func VerifyAt(ctx context.Context, src, dst Querier, h ApplyHolder, keys catalog.Keyspace, tables []string, r catalog.KeyRange, opts OnlineOptions) (OnlineVerification, error) {
	p, err := newOnlinePlan(ctx, src, keys, tables, r)
	if err != nil {
		return OnlineVerification{}, fmt.Errorf("source: %w", err)
	}
	return verifyAt(ctx, src, dst, h, p, opts)
}

func verifyAt(ctx context.Context, src, dst Querier, h ApplyHolder, p *onlinePlan, opts OnlineOptions) (OnlineVerification, error) {
	sc, err := snapshotConn(ctx, src)
	if err != nil {
		return OnlineVerification{}, fmt.Errorf("source: %w", err)
	}
	defer sc.Close(context.WithoutCancel(ctx))
	dc, err := snapshotConn(ctx, dst)
	if err != nil {
		return OnlineVerification{}, fmt.Errorf("target: %w", err)
	}
	defer dc.Close(context.WithoutCancel(ctx))
	from, err := insertLSN(ctx, src)
	if err != nil {
		return OnlineVerification{}, err
	}
	var stx, dtx pgx.Tx
	var lsn pglogrepl.LSN
	err = h.HoldApply(ctx, from, func(ctx context.Context) (pglogrepl.LSN, error) {
		var err error
		stx, lsn, err = exportedSnapshot(ctx, sc)
		return lsn, err
	}, func(ctx context.Context) error {
		var err error
		if dtx, err = repeatableRead(ctx, dc); err == nil {
			_, err = dtx.Exec(ctx, "SELECT 1") // the snapshot is taken by the first statement
		}
		if err != nil {
			return fmt.Errorf("target: take a snapshot: %w", err)
		}
		return nil
	})
	if err != nil {
		return OnlineVerification{}, err
	}
	v, err := compareSnapshots(ctx, snapshotSide{"source", stx}, snapshotSide{"target", dtx}, p, opts)
	v.LSN = lsn
	return v, err
}

// VerifyShards verifies range r online between two shards that no migration links: each
// side is read from its own snapshot (REPEATABLE READ), chunk by chunk, while writes go
// on, so it is exact for a range that takes no writes (a moved range, fenced on its old
// shard) and otherwise shows what differed at about the same time.
func VerifyShards(ctx context.Context, a, b Querier, keys catalog.Keyspace, tables []string, r catalog.KeyRange, opts OnlineOptions) (OnlineVerification, error) {
	p, err := newOnlinePlan(ctx, a, keys, tables, r)
	if err != nil {
		return OnlineVerification{}, err
	}
	var sides [2]snapshotSide
	for i, db := range []Querier{a, b} {
		c, err := snapshotConn(ctx, db)
		if err != nil {
			return OnlineVerification{}, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		tx, err := repeatableRead(ctx, c)
		if err != nil {
			return OnlineVerification{}, err
		}
		sides[i] = snapshotSide{[]string{"source", "target"}[i], tx}
	}
	return compareSnapshots(ctx, sides[0], sides[1], p, opts)
}
