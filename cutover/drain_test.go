package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// waitFor polls cond every 50 ms for at most limit (generous: the machine is shared).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDrainWaitsForBackgroundWorkers: a logical replication subscription's apply worker
// (backend_type 'logical replication worker', not a client backend) writes sharded rows
// on the source. A transaction of it that passed the fence trigger before the fence and
// commits after must be waited for like a client's; and once fenced, its writes to the
// range fail (the trigger is ALWAYS-enabled, the worker runs in replica mode).
func TestDrainWaitsForBackgroundWorkers(t *testing.T) {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	src, pub := pgs[0], pgs[1]
	src.Exec(ctx, schema)
	pub.Exec(ctx, schema+`CREATE PUBLICATION app FOR TABLE tenants;`)
	db := connect(t, src.DSNApp())
	if err := InstallGuard(ctx, db, "tenant_id", []string{"tenants", "orders"}); err != nil {
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
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db := connect(t, pg.DSNApp())
	if err := InstallGuard(ctx, db, "tenant_id", []string{"tenants"}); err != nil {
		t.Fatal(err)
	}
	pid := func(c *pgx.Conn) int { return int(c.PgConn().PID()) }
	old := connect(t, pg.DSNApp())
	idle := connect(t, pg.DSNApp())
	rc := connect(t, pg.DSNApp())
	for _, c := range []*pgx.Conn{old, idle, rc} {
		if _, err := c.Exec(ctx, `SET track_activities = off`); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := old.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil { // takes the snapshot
		t.Fatal(err)
	}
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
