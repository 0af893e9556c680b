package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// ErrStragglers is returned when transactions that predate the fence are still running
// after the wait bound and were not to be killed.
var ErrStragglers = errors.New("transactions that started before the fence are still running")

// Straggler is a transaction that was running when the fence committed.
type Straggler struct {
	PID int
	// XactStart is zero when PostgreSQL does not say (track_activities off for the
	// session, or a session of a role this one may not see).
	XactStart  time.Time
	State      string
	Query      string
	Type       string // backend_type: client backend, logical replication worker, ...
	ReadOnly   bool
	Terminated bool
}

func (s Straggler) String() string {
	q := strings.Join(strings.Fields(s.Query), " ")
	if len(q) > 80 {
		q = q[:77] + "..."
	}
	since := "since " + s.XactStart.Format(time.RFC3339Nano)
	if s.XactStart.IsZero() {
		since = "start unknown: track_activities off, or a role this one may not see (grant it pg_read_all_stats)"
	}
	kind := ""
	if s.Type != "" && s.Type != "client backend" {
		kind = s.Type + ", "
	}
	return fmt.Sprintf("pid %d (%s%s %s): %s", s.PID, kind, s.State, since, q)
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

// stragglersSQL lists, in one round trip, the backends of this database (other than the
// caller's) whose transaction may have started before the cutoff $1, and every prepared
// transaction, which outlives its session and cannot be killed from here (it must be
// committed or rolled back by whoever prepared it). A NULL cutoff means the statement's
// own start, which, sent after the fence committed, is a valid cutoff: that is how the
// first poll of a drain reads the fence time for free. It returns the cutoff on every row
// and one row of NULLs when there is nothing.
//
// Every kind of backend counts, not only client backends: a logical replication apply
// worker, a background worker (pg_cron, an extension's) or a parallel worker writes
// through the fence like a client. Only autovacuum and WAL senders are left out: they
// write no rows of a table. A backend whose transaction start is not shown (NULL
// xact_start: track_activities off, or a role this one may not see, which also hides
// backend_type) may predate the fence: it counts while it holds an xid or a snapshot
// (backend_xid, backend_xmin, shown even then) and did not connect after the cutoff.
// Without either its next statement takes a snapshot that sees the fence.
const stragglersSQL = `
WITH c AS (SELECT coalesce($1::timestamptz, statement_timestamp()) AS at)
SELECT c.at, s.pid, s.xact_start, s.state, s.query, s.backend_type
FROM c LEFT JOIN LATERAL (
	SELECT a.pid, a.xact_start, coalesce(a.state, '') AS state, coalesce(a.query, '') AS query,
	       coalesce(a.backend_type, '') AS backend_type
	FROM pg_stat_activity a
	WHERE a.datname = current_database()
	  AND coalesce(a.backend_type, '') NOT IN ('autovacuum launcher', 'autovacuum worker', 'walsender')
	  AND a.pid <> pg_backend_pid()
	  AND (a.xact_start < c.at
	       OR a.xact_start IS NULL
	          AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
	          AND coalesce(a.backend_start < c.at, true))
	UNION ALL
	SELECT -1, p.prepared, 'prepared', 'PREPARE TRANSACTION ' || p.gid, 'prepared transaction'
	FROM pg_prepared_xacts p
	WHERE p.database = current_database()
) s ON true
ORDER BY s.xact_start`

// poll is one look at what runs on the source.
type poll struct {
	at       time.Time   // the cutoff
	sessions []Straggler // sessions whose transaction started before the cutoff
	prepared []Straggler // every prepared transaction (PID -1)
}

// look polls the source with cutoff before (zero: the statement's start).
func look(ctx context.Context, db Querier, before time.Time) (poll, error) {
	p := poll{at: before}
	var arg *time.Time
	if !before.IsZero() {
		arg = &before
	}
	// QueryExecModeExec: one round trip, no statement preparation, inside the window.
	rows, err := db.Query(ctx, stragglersSQL, pgx.QueryExecModeExec, arg)
	if err != nil {
		return p, fmt.Errorf("cutover: list transactions older than the fence: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			pid   *int
			start *time.Time
			state *string
			query *string
			kind  *string
		)
		if err := rows.Scan(&p.at, &pid, &start, &state, &query, &kind); err != nil {
			return p, fmt.Errorf("cutover: list transactions older than the fence: %w", err)
		}
		if pid == nil {
			continue
		}
		s := Straggler{PID: *pid, State: *state, Query: *query, Type: *kind}
		if start != nil {
			s.XactStart = *start
		}
		if s.PID < 0 {
			p.prepared = append(p.prepared, s)
		} else {
			p.sessions = append(p.sessions, s)
		}
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("cutover: list transactions older than the fence: %w", err)
	}
	return p, nil
}

// stragglers returns the cutoff it used (before, or the statement's start when before is
// zero) and the sessions and prepared transactions older than it.
func stragglers(ctx context.Context, db Querier, before time.Time) (time.Time, []Straggler, error) {
	p, err := look(ctx, db, before)
	out := p.sessions
	for _, s := range p.prepared {
		if s.XactStart.Before(p.at) {
			out = append(out, s)
		}
	}
	return p.at, out, err
}

// Drain polling: every pollFast for the first pollFastFor, which is when short
// transactions of a live load end (each millisecond of overshoot is a millisecond of the
// window), then backing off to pollSlow for long stragglers.
const (
	killGrace   = 2 * time.Second // for backends terminated by --kill-stragglers to exit
	pollFast    = time.Millisecond
	pollFastFor = 200 * time.Millisecond
	pollSlow    = 20 * time.Millisecond
)

// WaitStragglers waits until every transaction that started before the fence committed
// has ended, polling every millisecond or so, for at most bound. Past the bound it
// terminates them when kill is set (prepared transactions excepted), or returns
// ErrStragglers naming them. A transaction that began before the fence and commits after
// it is thus never lost: its commit precedes the fence LSN captured afterwards.
func WaitStragglers(ctx context.Context, db Querier, before time.Time, bound time.Duration, kill bool) ([]Straggler, error) {
	if before.IsZero() {
		return nil, errors.New("cutover: wait for stragglers: no fence time given")
	}
	_, killed, err := drain(ctx, db, before, bound, kill)
	return killed, err
}

// drain is WaitStragglers; a zero before takes the first poll's start as the fence time
// (the caller sends it after the fence committed), which saves a round trip. It returns
// the fence time it used.
//
// A transaction that started before the fence may PREPARE after it: it then leaves
// pg_stat_activity and shows in pg_prepared_xacts with a prepare time past the fence, to
// be committed later. So the prepared transactions waited for are those prepared before
// the fence, and, once no session straggler is left, every one present at that moment:
// each straggler has by then ended or prepared. One prepared later began after the fence
// and sees it.
func drain(ctx context.Context, db Querier, before time.Time, bound time.Duration, kill bool) (time.Time, []Straggler, error) {
	start := time.Now()
	deadline := start.Add(bound)
	wait := pollFast
	var killed []Straggler
	var held map[string]bool // prepared transactions present once the sessions were drained
	var sus suspects
	for {
		p, err := look(ctx, db, before)
		if err != nil {
			return p.at, killed, err
		}
		before = p.at
		p.sessions = sus.filter(p.sessions)
		if held == nil && len(p.sessions) == 0 {
			held = map[string]bool{}
			for _, s := range p.prepared {
				held[s.Query] = true
			}
		}
		ss := p.sessions
		for _, s := range p.prepared {
			if s.XactStart.Before(p.at) || held[s.Query] {
				ss = append(ss, s)
			}
		}
		if len(ss) == 0 {
			return before, killed, nil
		}
		if time.Now().After(deadline) {
			if !kill {
				return before, killed, fmt.Errorf("%w after %v: %s (end them, raise --straggler-timeout, or pass --kill-stragglers)", ErrStragglers, bound, describe(ss))
			}
			for _, s := range ss {
				if s.PID < 0 {
					return before, killed, fmt.Errorf("%w: prepared transaction %s must be committed or rolled back first", ErrStragglers, s)
				}
				if _, err := db.Exec(ctx, `SELECT pg_terminate_backend($1)`, s.PID); err != nil {
					return before, killed, fmt.Errorf("cutover: terminate straggler %s: %w", s, err)
				}
				s.Terminated = true
				killed = append(killed, s)
			}
			// Give the terminated backends a moment to go away, then look again. A
			// terminated backend exits in milliseconds on an idle server but may take
			// longer on a busy one, whatever the bound for the stragglers was.
			deadline = time.Now().Add(max(bound, killGrace))
			kill = false
		}
		if time.Since(start) > pollFastFor {
			wait = pollSlow
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return before, killed, ctx.Err()
		case <-t.C:
		}
	}
}

// suspects are the backends that straggled at every poll of a drain so far. A
// transaction's start is not always shown (see stragglersSQL): one of unknown start is a
// straggler only while its backend has been one since the first poll, which ran after
// the fence committed. Once seen without an old transaction (gone, between transactions,
// or in one begun after the cutoff), any later transaction of it began after the fence.
// A known start is exact and needs no history.
type suspects map[int]bool

// filter returns the sessions of one poll that are still stragglers, and remembers them.
func (sp *suspects) filter(ss []Straggler) []Straggler {
	first := *sp == nil
	next := suspects{}
	out := ss[:0:0]
	for _, s := range ss {
		if first || !s.XactStart.IsZero() || (*sp)[s.PID] {
			out = append(out, s)
			next[s.PID] = true
		}
	}
	*sp = next
	return out
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

// markerSQL writes a logical message on the source and makes it visible to the WAL
// sender at once. A WAL sender decodes flushed WAL only; the message is transactional so
// that its statement commits with an xid, and the commit flushes (synchronous_commit local
// for this transaction: a source with synchronous_commit off, or waiting on standbys,
// would hold it back otherwise; PostgreSQL 15 never flushes a lone non-transactional
// message). The function returns the end of the message's record; the commit follows it.
const markerSQL = `SELECT pg_logical_emit_message(true, 'reshard', $1)::text
FROM (SELECT set_config('synchronous_commit', 'local', true)) s`

// marker writes a flushed logical message with the given content and returns its LSN.
func marker(ctx context.Context, db Querier, content string) (pglogrepl.LSN, error) {
	var s string
	if err := db.QueryRow(ctx, markerSQL, pgx.QueryExecModeExec, content).Scan(&s); err != nil {
		return 0, fmt.Errorf("cutover: write the %q marker: %w", content, err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("cutover: parse the LSN %q of the %q marker: %w", s, content, err)
	}
	return lsn, nil
}

// FenceLSN writes a logical message after the fence, flushed, and returns its LSN: once the
// mover has applied up to it, every write the source accepted for the range has reached
// the target.
func FenceLSN(ctx context.Context, db Querier, migration string) (pglogrepl.LSN, error) {
	return marker(ctx, db, "fence "+migration)
}
