package cutover

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/pgerr"
)

// LockRetry bounds how long the guard's DDL (CREATE/DROP TRIGGER) waits for its table
// lock. A DDL lock request queues every later writer of the table behind it, so an
// unbounded wait on a long transaction stops the application's writes for as long as
// that transaction lives. Each attempt runs with lock_timeout; a lock not granted (or a
// deadlock) is retried after a pause that doubles with jitter. It is partitions.Apply's
// approach, with its defaults.
type LockRetry struct {
	Timeout    time.Duration // lock_timeout of each attempt; default 2s
	Attempts   int           // default 5
	Backoff    time.Duration // first pause; default 500ms
	MaxBackoff time.Duration // longest pause; default 10s
}

// DefaultLockRetry is what InstallGuard and RemoveGuard use.
var DefaultLockRetry = LockRetry{Timeout: 2 * time.Second, Attempts: 5, Backoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second}

func (lr LockRetry) withDefaults() LockRetry {
	d := DefaultLockRetry
	if lr.Timeout <= 0 {
		lr.Timeout = d.Timeout
	}
	if lr.Attempts <= 0 {
		lr.Attempts = d.Attempts
	}
	if lr.Backoff <= 0 {
		lr.Backoff = d.Backoff
	}
	if lr.MaxBackoff <= 0 {
		lr.MaxBackoff = d.MaxBackoff
	}
	return lr
}

// inTx runs fn in a transaction whose lock waits are bounded by lr.Timeout, retrying
// while a lock is not granted. fn's changes commit together or not at all. After the last
// attempt the error wraps ErrLockNotGranted and PostgreSQL's error.
func (lr LockRetry) inTx(ctx context.Context, db Conn, fn func(pgx.Tx) error) error {
	lr = lr.withDefaults()
	wait := lr.Backoff
	for attempt := 1; ; attempt++ {
		err := lr.once(ctx, db, fn)
		if err == nil || !lockNotGranted(err) {
			return err
		}
		if attempt >= lr.Attempts {
			return fmt.Errorf("%w (%s, %d attempts): a long transaction holds a conflicting lock (see pg_stat_activity and pg_locks): %w",
				ErrLockNotGranted, lr.Timeout, attempt, err)
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, lr.MaxBackoff)
	}
}

func (lr LockRetry) once(ctx context.Context, db Conn, fn func(pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lr.Timeout.Milliseconds())); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// lockNotGranted: lock_not_available (lock_timeout) or deadlock_detected.
func lockNotGranted(err error) bool {
	return pgerr.Is(err, pgerr.LockNotAvailable, pgerr.DeadlockDetected)
}
