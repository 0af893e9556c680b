package mover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Lag is how far the target is behind: bytes of source WAL between the source's insert
// position (past every commit so far, asynchronous ones included) and the applied
// position, and seconds since the source time of the applied position (0 when caught up).
func (m *Mover) Lag(ctx context.Context) (bytes int64, seconds float64, err error) {
	src, _ := m.pools()
	if src == nil {
		return 0, 0, errors.New("mover: not running: Start it first")
	}
	var cur string
	if err := src.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&cur); err != nil {
		return 0, 0, fmt.Errorf("source: read the current WAL position: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(cur)
	if err != nil {
		return 0, 0, fmt.Errorf("source: bad WAL position %q: %w", cur, err)
	}
	applied := m.AppliedLSN()
	if applied >= lsn {
		return 0, 0, nil
	}
	bytes = int64(lsn - applied)
	if at := m.appliedAt.Load(); at != 0 {
		seconds = max(0, time.Since(time.Unix(0, at)).Seconds())
	}
	return bytes, seconds, nil
}
