package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
)

// churn writes tenant's rows on c's shard until stop: each round one transaction adds 1
// to an order's total and inserts an event, and the next undoes both, so that the rows
// differ from their start while it runs and are back to it once stop returns.
func churn(t *testing.T, c *pgx.Conn, tenant int64) (rounds *atomic.Int64, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.ConnectConfig(ctx, c.Config().Copy())
	if err != nil {
		t.Fatal(err)
	}
	rounds = new(atomic.Int64)
	done := make(chan error, 1)
	go func() {
		defer conn.Close(context.Background())
		for ctx.Err() == nil {
			var ev int64
			var at time.Time
			err := conn.QueryRow(context.Background(), `WITH o AS (UPDATE orders SET total = total + 1
				WHERE tenant_id = $1 AND id = (SELECT min(id) FROM orders WHERE tenant_id = $1))
				INSERT INTO events (tenant_id, created_at, kind) VALUES ($1, now(), 'churn') RETURNING id, created_at`, tenant).Scan(&ev, &at)
			if err == nil {
				_, err = conn.Exec(context.Background(), `WITH o AS (UPDATE orders SET total = total - 1
					WHERE tenant_id = $1 AND id = (SELECT min(id) FROM orders WHERE tenant_id = $1))
					DELETE FROM events WHERE tenant_id = $1 AND id = $2 AND created_at = $3`, tenant, ev, at)
			}
			if err != nil {
				done <- err
				return
			}
			rounds.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
		done <- nil
	}()
	var once sync.Once
	return rounds, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("churn: %v", err)
			}
		})
	}
}

// caughtUp runs migration id of r to s2 with ex's options, blocking its driver once
// caught up (before the cutover, the catch-up going on) until release is called; wait
// returns the move's result.
func (f *fleet) caughtUp(t *testing.T, id string, r catalog.KeyRange) (release func(), wait func() (*catalog.Migration, error)) {
	t.Helper()
	caught, free := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ex := f.executor(ExecOptions{BeforeCutover: func() {
		once.Do(func() {
			close(caught)
			<-free
		})
	}})
	type result struct {
		m   *catalog.Migration
		err error
	}
	res := make(chan result, 1)
	go func() {
		m, err := ex.Move(context.Background(), MoveRequest{ID: id, Range: r, Target: "s2"})
		res <- result{m, err}
	}()
	select {
	case <-caught:
	case r := <-res:
		t.Fatalf("the move ended before catching up: %+v, %v", r.m, r.err)
	case <-time.After(3 * time.Minute):
		t.Fatal("the move did not catch up within 3 minutes")
	}
	var releaseOnce sync.Once
	release = func() { releaseOnce.Do(func() { close(free) }) }
	t.Cleanup(release)
	return release, func() (*catalog.Migration, error) {
		release()
		r := <-res
		return r.m, r.err
	}
}

// busyTenant carves the fleet's heaviest tenant on s1 into a range of its own.
func (f *fleet) busyTenant(t *testing.T) (demo.Tenant, catalog.KeyRange) {
	t.Helper()
	var tn demo.Tenant
	for _, x := range f.tenants {
		if f.ranges[0].Range.Contains(x.ID) && x.Orders > tn.Orders {
			tn = x
		}
	}
	r := catalog.NewRange(tn.ID, tn.ID+1)
	if _, err := Carve(context.Background(), f.store, r); err != nil {
		t.Fatal(err)
	}
	return tn, r
}

// TestVerifyThroughTheDriverHoldsItsApplyAtOnePosition: a verify of a migration catching
// up, run outside its driver (as `reshard verify ID` is), asks the driver through etcd to
// hold its apply at the verify's position: while the tenant's rows change all the time on
// the source, every verify finds both sides equal at one position, over every row of the
// range; a row corrupted on the target is named by its primary key. The move then
// finishes and every tenant's rows on every shard are as they were.
func TestVerifyThroughTheDriverHoldsItsApplyAtOnePosition(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2)
	tn, r := f.busyTenant(t)
	st, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := rangeRows(t, f.conns["s1"], r)
	rounds, stopChurn := churn(t, f.conns["s1"], tn.ID)
	defer stopChurn()
	_, wait := f.caughtUp(t, "held", r)
	hold := DriverHold{Store: f.store, ID: "held"}
	for i := range 3 {
		v, err := cutover.VerifyAt(ctx, f.conns["s1"], f.conns["s2"], hold, st.Config.Keyspace(), demo.Tables, r, cutover.OnlineOptions{})
		t.Logf("verify %d at %s: %d rows in %d chunks, %d churn rounds so far: %v", i, v.LSN, v.Rows, v.Chunks, rounds.Load(), err)
		if err != nil || v.LSN == 0 || v.DiffCount != 0 {
			t.Fatalf("verify %d: %v (%d differences); want equal at one position", i, err, v.DiffCount)
		}
		if v.Rows != before && v.Rows != before+1 { // the churn's event is there or not
			t.Errorf("verify %d compared %d rows; the range holds %d (+1 while an event of the churn lives)", i, v.Rows, before)
		}
	}
	if rounds.Load() < 10 {
		t.Errorf("only %d churn rounds: the verifies ran without writes", rounds.Load())
	}

	corrupted := corruptOnTarget(t, f.conns["s2"], tn.ID, +1)
	_, err = cutover.VerifyAt(ctx, f.conns["s1"], f.conns["s2"], hold, st.Config.Keyspace(), demo.Tables, r, cutover.OnlineOptions{})
	key := fmt.Sprintf("orders (tenant_id, id)=(%d, %d): differs", tn.ID, corrupted)
	if !errors.Is(err, cutover.ErrMismatch) || !strings.Contains(err.Error(), key) {
		t.Errorf("verify over a corrupted row: %v; want a mismatch naming %q", err, key)
	}
	corruptOnTarget(t, f.conns["s2"], tn.ID, -1) // as it was: the move's own verify would refuse

	stopChurn()
	if m, err := wait(); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("move: %+v, %v; want done", m, err)
	}
	f.check(ctx)
}

// TestVerifyHoldEndsWhenTheRequestVanishes: a verify that holds the driver's apply and then
// dies (its request's lease revoked) stalls the catch-up no longer: the apply goes on
// before the driver's own bound, and the move then finishes normally, every tenant's rows
// on every shard as they were.
func TestVerifyHoldEndsWhenTheRequestVanishes(t *testing.T) {
	ctx := context.Background()
	old := HoldBound
	HoldBound = 5 * time.Minute // only the request's vanishing may end the hold in time
	t.Cleanup(func() { HoldBound = old })
	f := newFleet(t, 2)
	tn, r := f.busyTenant(t)
	_, wait := f.caughtUp(t, "vanish", r)

	from := insertLSN(t, f.conns["s1"])
	ticket, err := f.store.RequestHold(ctx, "vanish", from.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ticket.WaitAck(ctx, catalog.HoldArmed); err != nil {
		t.Fatal(err)
	}
	if err := ticket.SetPosition(ctx, insertLSN(t, f.conns["s1"]).String()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ticket.WaitAck(ctx, catalog.HoldHeld); err != nil {
		t.Fatal(err)
	}
	// A row written now reaches the target only once the apply goes on.
	var id int64
	var was string
	if err := f.conns["s1"].QueryRow(ctx, `SELECT id, status FROM orders WHERE tenant_id = $1 ORDER BY id LIMIT 1`, tn.ID).Scan(&id, &was); err != nil {
		t.Fatal(err)
	}
	if _, err := f.conns["s1"].Exec(ctx, "UPDATE orders SET status = 'held' WHERE tenant_id = $1 AND id = $2", tn.ID, id); err != nil {
		t.Fatal(err)
	}
	ticket.Close(ctx) // the verify dies: its lease is revoked, its request vanishes
	deadline := time.Now().Add(time.Minute)
	for status := ""; status != "held"; {
		if err := f.conns["s2"].QueryRow(ctx, "SELECT status FROM orders WHERE tenant_id = $1 AND id = $2", tn.ID, id).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the apply still holds a minute after the verify's request vanished")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := f.conns["s1"].Exec(ctx, "UPDATE orders SET status = $3 WHERE tenant_id = $1 AND id = $2", tn.ID, id, was); err != nil {
		t.Fatal(err)
	}
	if m, err := wait(); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("move: %+v, %v; want done", m, err)
	}
	f.check(ctx)
}

func insertLSN(t *testing.T, c *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// corruptOnTarget adds by to the total of tenant's last order on the target (the churn
// writes its first), through the fence bypass, and returns the order's id.
func corruptOnTarget(t *testing.T, c *pgx.Conn, tenant int64, by int) int64 {
	t.Helper()
	ctx := context.Background()
	var id int64
	err := c.QueryRow(ctx, `WITH b AS (SELECT set_config($2, 'on', false))
		UPDATE orders SET total = total + $3 FROM b
		WHERE tenant_id = $1 AND id = (SELECT max(id) FROM orders WHERE tenant_id = $1) RETURNING id`,
		tenant, cutover.BypassSetting, by).Scan(&id)
	if err != nil {
		t.Fatalf("change a row on the target: %v", err)
	}
	if _, err := c.Exec(ctx, "SELECT set_config($1, 'off', false)", cutover.BypassSetting); err != nil {
		t.Fatal(err)
	}
	return id
}

func rangeRows(t *testing.T, c *pgx.Conn, r catalog.KeyRange) int64 {
	t.Helper()
	var total int64
	for _, tb := range demo.Tables {
		var n int64
		if err := c.QueryRow(context.Background(), fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", tb, r.SQL(demo.Key))).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}
