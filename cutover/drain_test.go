package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestDrainWaitsForBackgroundWorkers: a logical replication subscription's apply worker
// (backend_type 'logical replication worker', not a client backend) writes sharded rows
// on the source. A transaction of it that passed the fence trigger before the fence and
// commits after must be waited for like a client's; and once fenced, its writes to the
// range fail (the trigger is ALWAYS-enabled, the worker runs in replica mode).
func TestDrainWaitsForBackgroundWorkers(t *testing.T) {
	ctx := context.Background()
	pgs := shards(t, schema, schema+`CREATE PUBLICATION app FOR TABLE tenants;`)
	src, pub := pgs[0], pgs[1]
	db := connect(t, src.DSNApp())
	if err := InstallGuard(ctx, db, catalog.RangeOn("tenant_id"), []string{"tenants", "orders"}); err != nil {
		t.Fatal(err)
	}
	// The worker's insert waits, inside its transaction and after the fence trigger
	// (triggers fire by name), on an advisory lock an idle session holds: no client
	// transaction is open meanwhile.
	src.Exec(ctx, `CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(42); RETURN NEW; END $$;
		CREATE TRIGGER zz_hold BEFORE INSERT ON tenants FOR EACH ROW EXECUTE FUNCTION hold();
		ALTER TABLE tenants ENABLE REPLICA TRIGGER zz_hold;`)
	holder := connect(t, src.DSNApp())
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock(42)`); err != nil {
		t.Fatal(err)
	}
	src.Exec(ctx, fmt.Sprintf(`CREATE SUBSCRIPTION app CONNECTION '%s' PUBLICATION app WITH (copy_data = false)`, pub.DSNApp()))
	t.Cleanup(func() { src.Exec(context.Background(), `ALTER SUBSCRIPTION app DISABLE`) })
	pub.Exec(ctx, `INSERT INTO tenants VALUES (12, 'via the subscription')`)
	var worker int
	waitFor(t, 2*time.Minute, "the apply worker to wait inside its transaction", func() bool {
		err := db.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE backend_type = 'logical replication worker' AND xact_start IS NOT NULL AND wait_event_type = 'Lock'`).Scan(&worker)
		return err == nil
	})
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), []string{"tenants", "orders"}, 1); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	_, err = WaitStragglers(ctx, db, at, 300*time.Millisecond, false)
	if !errors.Is(err, ErrStragglers) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d ", worker)) {
		t.Fatalf("drain with the apply worker's transaction open = %v, want ErrStragglers naming pid %d", err, worker)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock(42)`); err != nil {
		t.Fatal(err)
	}
	if _, err := WaitStragglers(ctx, db, at, 2*time.Minute, false); err != nil {
		t.Fatalf("drain once the worker's transaction committed: %v", err)
	}
	var name string
	if err := db.QueryRow(ctx, `SELECT name FROM tenants WHERE tenant_id = 12`).Scan(&name); err != nil {
		t.Fatalf("the worker's row, accepted before the fence: %v", err)
	}
	// After the fence, the worker's writes to the range are refused.
	pub.Exec(ctx, `INSERT INTO tenants VALUES (13, 'after the fence')`)
	waitFor(t, 2*time.Minute, "the apply worker to fail on the fence", func() bool {
		var n int64
		err := db.QueryRow(ctx, `SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subname = 'app'`).Scan(&n)
		return err == nil && n > 0
	})
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE tenant_id = 13`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("fenced row written by the apply worker: %d, %v", n, err)
	}
}

// TestDrainWaitsForTransactionsOfUnknownStart: with track_activities off, PostgreSQL 15
// shows a session as state 'disabled' with a NULL xact_start, though its transaction
// (backend_xid, backend_xmin) may predate the fence; so does a session of a role the
// drain may not see. Such a transaction counts as a straggler while it holds a snapshot or
// an xid; an idle session, or one in a transaction that holds neither (READ COMMITTED
// between statements, no write), does not hold the drain.
func TestDrainWaitsForTransactionsOfUnknownStart(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, schema, "tenants")
	pid := func(c *pgx.Conn) int { return int(c.PgConn().PID()) }
	old := connect(t, pg.DSNApp())
	idle := connect(t, pg.DSNApp())
	rc := connect(t, pg.DSNApp())
	for _, c := range []*pgx.Conn{old, idle, rc} {
		if _, err := c.Exec(ctx, `SET track_activities = off`); err != nil {
			t.Fatal(err)
		}
	}
	tx := snapshotTx(t, old)
	if _, err := rc.Exec(ctx, `BEGIN; SELECT 1`); err != nil {
		t.Fatal(err)
	}
	var state string
	var start *time.Time
	if err := db.QueryRow(ctx, `SELECT state, xact_start FROM pg_stat_activity WHERE pid = $1`, pid(old)).Scan(&state, &start); err != nil {
		t.Fatal(err)
	}
	if state != "disabled" || start != nil {
		t.Fatalf("pg_stat_activity shows the untracked transaction as %q since %v; the test expects 'disabled' and NULL", state, start)
	}
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), []string{"tenants"}, 1); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES (11, 'late')`); err != nil { // its snapshot predates the fence
		t.Fatalf("old snapshot write: %v", err)
	}
	_, err = WaitStragglers(ctx, db, at, 300*time.Millisecond, false)
	if !errors.Is(err, ErrStragglers) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d ", pid(old))) {
		t.Fatalf("drain with an untracked transaction open = %v, want ErrStragglers naming pid %d", err, pid(old))
	}
	for _, c := range []*pgx.Conn{idle, rc} {
		if strings.Contains(err.Error(), fmt.Sprintf("pid %d ", pid(c))) {
			t.Errorf("the drain waits for pid %d, which holds no snapshot and no xid: %v", pid(c), err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := WaitStragglers(ctx, db, at, 2*time.Minute, false); err != nil {
		t.Fatalf("drain once the untracked transaction committed: %v", err)
	}
}

// TestDrainSuspects: a session whose transaction start is unknown stays a straggler only
// while it has been one at every poll since the first; one with a known start is judged
// by its start alone.
func TestDrainSuspects(t *testing.T) {
	known := func(pid int) Straggler { return Straggler{PID: pid, XactStart: time.Unix(1, 0)} }
	unknown := func(pid int) Straggler { return Straggler{PID: pid} }
	tests := []struct {
		name  string
		polls [][]Straggler
		want  []int // PIDs kept at the last poll
	}{
		{"unknown at the first poll counts", [][]Straggler{{unknown(1), known(2)}}, []int{1, 2}},
		{"unknown while it stays", [][]Straggler{{unknown(1)}, {unknown(1)}, {unknown(1)}}, []int{1}},
		{"unknown seen clear once is done", [][]Straggler{{unknown(1)}, {}, {unknown(1)}}, nil},
		{"unknown not there at the first poll", [][]Straggler{{known(2)}, {known(2), unknown(1)}}, []int{2}},
		{"known start whose session lost its start", [][]Straggler{{known(1)}, {unknown(1)}}, []int{1}},
		{"known start always counts", [][]Straggler{{}, {known(3)}}, []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sp suspects
			var got []Straggler
			for _, p := range tt.polls {
				got = sp.filter(p)
			}
			var pids []int
			for _, s := range got {
				pids = append(pids, s.PID)
			}
			if fmt.Sprint(pids) != fmt.Sprint(tt.want) {
				t.Errorf("kept %v, want %v", pids, tt.want)
			}
		})
	}
}

// TestDrainReadsFenceTime: with no fence time given, the drain's first poll takes its own
// start as the cutoff, and still waits for a REPEATABLE READ transaction whose snapshot
// predates it.
func TestDrainReadsFenceTime(t *testing.T) {
	ctx := context.Background()
	pg := shards(t, schema)[0]
	db, old := connect(t, pg.DSNApp()), connect(t, pg.DSNApp())
	tx := snapshotTx(t, old)
	before := time.Now()
	type out struct {
		at  time.Time
		err error
	}
	done := make(chan out, 1)
	go func() {
		at, _, err := drain(ctx, db, time.Time{}, 10*time.Second, false)
		done <- out{at, err}
	}()
	select {
	case o := <-done:
		t.Fatalf("drain returned (%v) while a transaction older than the fence runs", o.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.at.Before(before.Add(-time.Second)) || o.at.After(time.Now().Add(time.Second)) {
		t.Errorf("cutoff %v is not the first poll's time (around %v)", o.at, before)
	}
	// And a bound still ends the wait with ErrStragglers.
	tx2, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx) //nolint:errcheck
	if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := drain(ctx, db, time.Time{}, 50*time.Millisecond, false); !errors.Is(err, ErrStragglers) {
		t.Fatalf("drain past its bound = %v, want ErrStragglers", err)
	}
}

// TestDrainPreparedAfterFence: a transaction that started before the fence and PREPAREs
// after it leaves pg_stat_activity, and shows in pg_prepared_xacts with a prepare time past
// the fence; its writes land at COMMIT PREPARED, so the drain must wait for that.
func TestDrainPreparedAfterFence(t *testing.T) {
	ctx := context.Background()
	pg := shards(t, `ALTER SYSTEM SET max_prepared_transactions = 4`)[0]
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pg.Exec(ctx, schema)
	db, old, other := connect(t, pg.DSNApp()), connect(t, pg.DSNApp()), connect(t, pg.DSNApp())
	tx, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES (11, 'before the fence')`); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := drain(ctx, db, at, 10*time.Second, false)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := tx.Exec(ctx, `PREPARE TRANSACTION 'straggler'`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("drain returned (%v) while a transaction older than the fence is prepared", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := other.Exec(ctx, `COMMIT PREPARED 'straggler'`); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMarkerFlushed: the marker is flushed when it returns, even on a server whose
// synchronous_commit is off (as the test clusters are), so a WAL sender can decode it.
func TestMarkerFlushed(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	db := connect(t, pg.DSNApp())
	for i := range 5 {
		lsn, err := FenceLSN(ctx, db, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := db.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		flushed, _ := pglogrepl.ParseLSN(s)
		if flushed < lsn {
			t.Fatalf("marker at %s, WAL flushed to %s only", lsn, flushed)
		}
	}
}

// TestWaitStragglers: a REPEATABLE READ transaction whose snapshot predates the fence
// does not see it, so the drain must wait for it (or kill it).
func TestWaitStragglers(t *testing.T) {
	ctx := context.Background()
	pg, db := guardedShard(t, schema, "tenants")
	old := connect(t, pg.DSNApp())
	tx := snapshotTx(t, old)
	if err := SetFence(ctx, db, "m1", catalog.NewRange(10, 20), []string{"tenants"}, 1); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	// The old snapshot does not see the fence: its write passes the trigger.
	if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES (11, 'late')`); err != nil {
		t.Fatalf("old snapshot write: %v", err)
	}
	if _, err := WaitStragglers(ctx, db, at, 100*time.Millisecond, false); !errors.Is(err, ErrStragglers) {
		t.Fatalf("WaitStragglers = %v, want ErrStragglers", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := WaitStragglers(ctx, db, at, 10*time.Second, false)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitStragglers after commit: %v", err)
	}
	lsn, err := FenceLSN(ctx, db, "m1")
	if err != nil || lsn == 0 {
		t.Fatalf("FenceLSN = %v, %v", lsn, err)
	}
	// Kill mode terminates an idle-in-transaction straggler.
	tx2, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	at2, _ := fenceTime(ctx, db)
	killed, err := WaitStragglers(ctx, db, at2, 50*time.Millisecond, true)
	if err != nil || len(killed) != 1 {
		t.Fatalf("kill: killed %v, err %v", killed, err)
	}
}
