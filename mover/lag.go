package mover

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// ApplyRate is the measured apply rate: bytes of source WAL applied per second over
// intervals during which the mover stayed behind (so it applied as fast as it could),
// smoothed; 0 while unknown (it has not been behind for a whole second).
func (m *Mover) ApplyRate() float64 { return m.rate.get() }

// applyRate measures ApplyRate from samples of the applied position and the lag.
type applyRate struct {
	mu      sync.Mutex
	at      time.Time
	applied pglogrepl.LSN
	behind  bool
	perSec  float64
}

func (r *applyRate) sample(now time.Time, applied pglogrepl.LSN, lag int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behind && lag > 0 && applied > r.applied {
		s := float64(applied-r.applied) / now.Sub(r.at).Seconds()
		if r.perSec == 0 {
			r.perSec = s
		} else {
			r.perSec = (r.perSec + s) / 2
		}
	}
	r.at, r.applied, r.behind = now, applied, lag > 0
}

func (r *applyRate) get() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perSec
}
