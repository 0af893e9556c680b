package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/migrate"
)

// addedColumn is the column the test adds to orders during the move, and the DDL the move
// must ask for on the target (read from the source's catalog).
const (
	addColumn  = `ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu'`
	targetDDL  = `ALTER TABLE "public"."orders" ADD COLUMN "region" text DEFAULT 'eu'::text NOT NULL`
	regionOfID = `'r' || (id % 5)`
)

// TestAddColumnDuringCatchUpFinishesWithItsValues: under a live load, once the move of a
// busy tenant is caught up, orders gains a column on the source and writes fill it for
// the tenant's newest orders. The catch-up stops applying and the journal says so in one
// line naming the table and the column with the DDL to run on the target; once it has run
// there, the move goes on by itself (no re-run), verifies (the new column included) and
// finishes. The tenant's orders on the target carry the values written on the source;
// every tenant's rows on every shard are as expected over the columns they had before.
func TestAddColumnDuringCatchUpFinishesWithItsValues(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 13)
	stopLoad := s.runLoad(2, 0, 13)
	tenant, r, from, to := s.tenantMove(0) // the busiest tenant: the load writes to it

	var filled []int64 // orders of the tenant whose new column the writes set
	// No cutover retry: the first attempt finds the catch-up going again by itself.
	ex := s.executor(migrate.ExecOptions{Cutover: cutover.Options{CatchupTimeout: 2 * time.Minute},
		BeforeCutover: func() {
			filled = addColumnOnSource(t, s, from, tenant)
			line := waitForDDLLine(t, s, "add_column")
			t.Logf("the move says: %s", line)
			for _, w := range []string{"orders", `"region"`, "run on the target: " + targetDDL} {
				if !strings.Contains(line, w) {
					t.Errorf("the line lacks %q", w)
				}
			}
			if strings.Contains(line, "\n") {
				t.Errorf("more than one line: %q", line)
			}
			if _, err := s.conns[to].Exec(ctx, targetDDL); err != nil {
				t.Fatalf("the DDL the line gives, on the target: %v", err)
			}
		}})
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: "add_column", Range: r, Target: to})
	if err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("move: %v, %+v", err, m)
	}
	s.wantServing(t, tenant, to)
	res := stopLoad()
	if res.Failed > 0 {
		t.Errorf("%d transactions failed: %v", res.Failed, res.Errors)
	}
	checkRegions(t, s, to, tenant, filled)
	s.check(ctx, res)
}

// addColumnOnSource adds the column on the source shard and fills it for the tenant's 20
// newest orders; it returns their ids.
func addColumnOnSource(t *testing.T, s *stack, shard string, tenant int64) []int64 {
	ctx := context.Background()
	c := s.conns[shard]
	if _, err := c.Exec(ctx, addColumn); err != nil {
		t.Fatalf("source: %v", err)
	}
	rows, err := c.Query(ctx, `UPDATE orders SET region = `+regionOfID+` WHERE (tenant_id, id) IN
		(SELECT tenant_id, id FROM orders WHERE tenant_id = $1 ORDER BY id DESC LIMIT 20) RETURNING id`, tenant)
	if err != nil {
		t.Fatalf("source: fill the new column: %v", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(ids) == 0 {
		t.Fatalf("source: filled %d orders: %v", len(ids), err)
	}
	return ids
}

// waitForDDLLine waits (bounded) until the migration's journal names the DDL the target
// needs, and returns that line. The catch-up waits meanwhile; it must not fail.
func waitForDDLLine(t *testing.T, s *stack, id string) string {
	ctx := context.Background()
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m, err := s.store.GetMigration(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(m.LastError, "ALTER TABLE") {
			return m.LastError
		}
	}
	t.Fatal("the journal never said what DDL the target needs")
	return ""
}

// checkRegions checks the tenant's orders on shard: the filled ones that are still there
// (the load deletes a tenant's oldest order now and then) carry the values written on the
// source, every other one the column's default.
func checkRegions(t *testing.T, s *stack, shard string, tenant int64, filled []int64) {
	var wrong, kept int
	err := s.conns[shard].QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE region IS DISTINCT FROM CASE WHEN id = ANY($2) THEN `+regionOfID+` ELSE 'eu' END),
		count(*) FILTER (WHERE id = ANY($2))
		FROM orders WHERE tenant_id = $1`, tenant, filled).Scan(&wrong, &kept)
	if err != nil {
		t.Fatalf("target: the new column: %v", err)
	}
	if wrong != 0 || kept == 0 {
		t.Errorf("target: %d orders of tenant %d with a wrong region, %d of the %d filled ones there", wrong, tenant, kept, len(filled))
	}
	t.Logf("target: %d filled orders of tenant %d carry their region", kept, tenant)
}

// TestWindowTooLongKeepsCatchingUpThenStops: a cutover whose predicted window is over
// --max-window does not freeze: it keeps catching up and says why in the journal (what
// `reshard status` prints); past --catchup-timeout the move stops with ErrWindowTooLong,
// rolled back, nothing flipped and nothing frozen, every tenant's rows intact on every
// shard; a re-run with a bound the window can meet moves the range. A bound of one
// nanosecond makes every prediction too long, whatever the machine's speed.
func TestWindowTooLongKeepsCatchingUpThenStops(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 11)
	stopLoad := s.runLoad(2, 0, 11)
	tenant, r, from, to := s.tenantMove(0) // the busiest tenant: the load writes to it

	waiting := watchWaiting(t, s, "too_long")
	ex := s.executor(migrate.ExecOptions{Cutover: cutover.Options{MaxWindow: time.Nanosecond, CatchupTimeout: 10 * time.Second}})
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: "too_long", Range: r, Target: to})
	if !errors.Is(err, cutover.ErrWindowTooLong) || !strings.Contains(err.Error(), "--max-window") {
		t.Fatalf("move with --max-window 1ns: %v, want ErrWindowTooLong naming --max-window", err)
	}
	t.Logf("the move stopped: %v", err)
	if said := waiting(); !strings.Contains(said, "over the bound") || !strings.Contains(said, "catching up") {
		t.Errorf("while over the bound the journal said %q, want why it does not freeze", said)
	}
	if m == nil || m.Flipped() || m.Phase != catalog.PhaseRolledBack {
		t.Fatalf("migration after the stop: %+v", m)
	}
	s.wantServing(t, tenant, from)

	ex = s.executor(migrate.ExecOptions{CutoverRetries: 3, Cutover: cutover.Options{MaxWindow: 10 * time.Second}})
	if m, err = ex.Move(ctx, migrate.MoveRequest{ID: "in_bound", Range: r, Target: to}); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("the re-run: %v, %+v", err, m)
	}
	if m.Verify == nil || m.Verify.PredictedWindow <= 0 || m.Verify.PredictedWindow > 10 {
		t.Errorf("the re-run's prediction: %+v", m.Verify)
	}
	s.wantServing(t, tenant, to)
	res := stopLoad()
	if res.Failed > 0 {
		t.Errorf("%d transactions failed: %v", res.Failed, res.Errors)
	}
	s.check(ctx, res)
}

// watchWaiting polls migration id's journal until the returned function is called, which
// returns the last non-empty verify.waiting it saw.
func watchWaiting(t *testing.T, s *stack, id string) func() string {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		said string
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if m, err := s.store.GetMigration(ctx, id); err == nil && m.Verify != nil && m.Verify.Waiting != "" {
				mu.Lock()
				said = m.Verify.Waiting
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	stop := func() string {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return said
	}
	t.Cleanup(func() { stop() })
	return stop
}
