package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// ErrStragglers is returned when transactions that predate the fence are still running
// after the wait bound and were not to be killed.
var ErrStragglers = errors.New("transactions that started before the fence are still running")

// Straggler is a transaction that was running when the fence committed.
type Straggler struct {
	PID        int
	XactStart  time.Time
	State      string
	Query      string
	ReadOnly   bool
	Terminated bool
}

func (s Straggler) String() string {
	q := strings.Join(strings.Fields(s.Query), " ")
	if len(q) > 80 {
		q = q[:77] + "..."
	}
	return fmt.Sprintf("pid %d (%s since %s): %s", s.PID, s.State, s.XactStart.Format(time.RFC3339Nano), q)
}

// fenceTime returns the source's clock right after the fence committed. Every
// transaction that started before it may not see the fence (a REPEATABLE READ snapshot
// taken earlier, read-only or not) and must end before the range is declared drained.
func fenceTime(ctx context.Context, db Querier) (time.Time, error) {
	var t time.Time
	if err := db.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("cutover: read source clock: %w", err)
	}
	return t, nil
}

func stragglers(ctx context.Context, db Querier, before time.Time) ([]Straggler, error) {
	rows, err := db.Query(ctx, `
		SELECT pid, xact_start, coalesce(state, ''), coalesce(query, '')
		FROM pg_stat_activity
		WHERE datname = current_database()
		  AND backend_type = 'client backend'
		  AND pid <> pg_backend_pid()
		  AND xact_start IS NOT NULL
		  AND xact_start < $1
		ORDER BY xact_start`, before)
	if err != nil {
		return nil, fmt.Errorf("cutover: list transactions older than the fence: %w", err)
	}
	defer rows.Close()
	var out []Straggler
	for rows.Next() {
		var s Straggler
		if err := rows.Scan(&s.PID, &s.XactStart, &s.State, &s.Query); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Prepared transactions outlive their session and cannot be killed from here: they
	// must be committed or rolled back by whoever prepared them.
	prows, err := db.Query(ctx, `SELECT gid, prepared FROM pg_prepared_xacts WHERE database = current_database() AND prepared < $1`, before)
	if err != nil {
		return nil, fmt.Errorf("cutover: list prepared transactions: %w", err)
	}
	defer prows.Close()
	for prows.Next() {
		var gid string
		var at time.Time
		if err := prows.Scan(&gid, &at); err != nil {
			return nil, err
		}
		out = append(out, Straggler{PID: -1, XactStart: at, State: "prepared", Query: "PREPARE TRANSACTION " + gid})
	}
	return out, prows.Err()
}

// WaitStragglers waits until every transaction that started before the fence committed
// has ended, polling every few milliseconds, for at most bound. Past the bound it
// terminates them when kill is set (prepared transactions excepted), or returns
// ErrStragglers naming them. A transaction that began before the fence and commits after
// it is thus never lost: its commit precedes the fence LSN captured afterwards.
func WaitStragglers(ctx context.Context, db Querier, before time.Time, bound time.Duration, kill bool) ([]Straggler, error) {
	deadline := time.Now().Add(bound)
	wait := 2 * time.Millisecond
	var killed []Straggler
	for {
		ss, err := stragglers(ctx, db, before)
		if err != nil {
			return killed, err
		}
		if len(ss) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			if !kill {
				return killed, fmt.Errorf("%w after %v: %s (end them, raise --straggler-timeout, or pass --kill-stragglers)", ErrStragglers, bound, describe(ss))
			}
			for _, s := range ss {
				if s.PID < 0 {
					return killed, fmt.Errorf("%w: prepared transaction %s must be committed or rolled back first", ErrStragglers, s)
				}
				if _, err := db.Exec(ctx, `SELECT pg_terminate_backend($1)`, s.PID); err != nil {
					return killed, fmt.Errorf("cutover: terminate straggler %s: %w", s, err)
				}
				s.Terminated = true
				killed = append(killed, s)
			}
			// Give the terminated backends a moment to go away, then look again.
			deadline = time.Now().Add(bound)
			kill = false
		}
		select {
		case <-ctx.Done():
			return killed, ctx.Err()
		case <-time.After(wait):
		}
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

func describe(ss []Straggler) string {
	parts := make([]string, 0, len(ss))
	for i, s := range ss {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ss)-5))
			break
		}
		parts = append(parts, s.String())
	}
	return strings.Join(parts, "; ")
}

// FenceLSN writes a logical message after the fence and returns its LSN: once the mover
// has applied up to it, every write the source accepted for the range has reached the
// target. The message is transactional=false so it gets an LSN at once.
func FenceLSN(ctx context.Context, db Querier, migration string) (pglogrepl.LSN, error) {
	var s string
	if err := db.QueryRow(ctx, `SELECT pg_logical_emit_message(false, 'reshard', $1)::text`, "fence "+migration).Scan(&s); err != nil {
		return 0, fmt.Errorf("cutover: write fence marker: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("cutover: parse fence LSN %q: %w", s, err)
	}
	return lsn, nil
}
