package mover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/internal/clock"
	"github.com/reshard/reshard/internal/pgerr"
	"github.com/reshard/reshard/internal/pgmeta"
)

// createSlot creates the permanent pgoutput slot on a replication connection and exports
// its snapshot. The snapshot lives only until the next command on conn (even a failed
// one), so the caller must have every copy worker import it before using conn again.
// Creation waits for the transactions already running on the source.
func createSlot(ctx context.Context, conn *pgconn.PgConn, name string) (consistent pglogrepl.LSN, snapshot string, err error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary:      false, // a temporary slot would vanish with the connection
		SnapshotAction: "EXPORT_SNAPSHOT",
		Mode:           pglogrepl.LogicalReplication,
	})
	if err != nil {
		return 0, "", fmt.Errorf("source: create replication slot %s: %w", name, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, "", fmt.Errorf("source: slot %s: bad consistent point %q: %w", name, res.ConsistentPoint, err)
	}
	return lsn, res.SnapshotName, nil
}

// slotInfo is the source's view of a slot.
type slotInfo struct {
	exists    bool
	active    bool
	activePID *int32
	walStatus string // reserved, extended, unreserved, lost
}

func readSlot(ctx context.Context, q pgmeta.Querier, name string) (slotInfo, error) {
	var s slotInfo
	var status *string
	err := q.QueryRow(ctx, `SELECT active, active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&s.active, &s.activePID, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("source: read slot %s: %w", name, err)
	}
	s.exists = true
	if status != nil {
		s.walStatus = *status
	}
	return s, nil
}

// dropSlot drops the slot if it exists. A slot still in use by a WAL sender (a mover that
// just stopped, or one of a dead process the server has not noticed yet) is waited for a
// little, then its WAL sender is terminated.
func dropSlot(ctx context.Context, db pgmeta.Querier, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := readSlot(ctx, db, name)
		if err != nil {
			return err
		}
		if !s.exists {
			return nil
		}
		if s.active && s.activePID != nil {
			if time.Now().Before(deadline) {
				if err := clock.Sleep(ctx, 100*time.Millisecond); err != nil {
					return err
				}
				continue
			}
			if _, err := db.Exec(ctx, "SELECT pg_terminate_backend($1)", *s.activePID); err != nil {
				return fmt.Errorf("source: slot %s is in use by process %d and it could not be stopped: %w", name, *s.activePID, err)
			}
		}
		_, err = db.Exec(ctx, "SELECT pg_drop_replication_slot($1)", name)
		switch {
		case err == nil:
			return nil
		case pgerr.Is(err, pgerr.UndefinedObject): // gone meanwhile
			return nil
		case pgerr.Is(err, pgerr.ObjectInUse) && time.Now().Before(deadline.Add(10*time.Second)):
			if err := clock.Sleep(ctx, 200*time.Millisecond); err != nil {
				return err
			}
		default:
			return fmt.Errorf("source: drop replication slot %s: %w", name, err)
		}
	}
}
