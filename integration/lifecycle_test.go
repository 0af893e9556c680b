package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/migrate/migratetest"
)

// TestCancelAndCleanupLater: a move stopped while catching up is cancelled (slot,
// publication, fence and the target's copy removed; the range serves from its source), and
// a move with cleanup "later" leaves its source rows fenced until `cleanup --drop-fence`.
func TestCancelAndCleanupLater(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 3)
	tenant, r, from, to := s.tenantMove(0)
	countOn := func(shard string) int64 {
		t.Helper()
		var n int64
		if err := s.conns[shard].QueryRow(ctx, `SELECT count(*) FROM ledger WHERE tenant_id = $1`, tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := countOn(from)

	// Stop the driver once the target is caught up, as a crash would.
	mctx, stop := context.WithCancel(ctx)
	ex := s.executor(migrate.ExecOptions{BeforeCutover: stop})
	if _, err := ex.Move(mctx, migrate.MoveRequest{ID: "to_cancel", Range: r, Target: to}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted move: %v", err)
	}
	if n := countOn(to); n != before {
		t.Fatalf("target holds %d of %d ledger rows before the cancel", n, before)
	}
	ex = s.executor(migrate.ExecOptions{})
	m, err := ex.Cancel(ctx, "to_cancel")
	if err != nil || m.Phase != catalog.PhaseCancelled {
		t.Fatalf("cancel: %v, %+v", err, m)
	}
	if n := countOn(to); n != 0 {
		t.Errorf("target keeps %d rows after the cancel", n)
	}
	if n := countOn(from); n != before {
		t.Errorf("source has %d rows, want %d", n, before)
	}
	if _, err := s.conns[from].Exec(ctx, `UPDATE tenants SET name = name WHERE tenant_id = $1`, tenant); err != nil {
		t.Errorf("write to the source after the cancel: %v", err)
	}

	// Cleanup later: the move flips, the source keeps its rows behind the fence.
	ex = s.executor(migrate.ExecOptions{CleanupLater: true})
	m, err = ex.Move(ctx, migrate.MoveRequest{ID: "later", Range: r, Target: to})
	if err != nil || m.Phase != catalog.PhaseCleaningUp {
		t.Fatalf("move with cleanup later: %v, %+v", err, m)
	}
	if n := countOn(from); n != before {
		t.Errorf("source has %d rows before cleanup, want %d", n, before)
	}
	if _, err := s.conns[from].Exec(ctx, `UPDATE tenants SET name = name WHERE tenant_id = $1`, tenant); !cutover.IsFenceError(err) {
		t.Errorf("stale write to the old shard: %v, want the fence error", err)
	}
	if m, err = ex.Cleanup(ctx, "later", true); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("cleanup: %v, %+v", err, m)
	}
	if n := countOn(from); n != 0 {
		t.Errorf("source keeps %d rows after cleanup", n)
	}
	var triggers int
	if err := s.conns[from].QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence'`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers != 0 {
		t.Errorf("%d fence triggers left after cleanup --drop-fence", triggers)
	}
	s.check(ctx, nil)
}

// signal sends sig to a driver process.
func (d *driver) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitPhase polls the journal until id is in phase (and cond, if given, holds), or fails.
func (s *stack) waitPhase(t *testing.T, d *driver, id, phase string, cond func(*catalog.Migration) bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		m, err := s.store.GetMigration(context.Background(), id)
		if err == nil && m.Phase == phase && (cond == nil || cond(m)) {
			return
		}
		select {
		case err := <-d.done:
			t.Fatalf("%s ended before it was seen %s: %v\n%s", id, phase, err, d.log())
		default:
		}
	}
	t.Fatalf("%s never seen %s", id, phase)
}

// rowsOf counts a tenant's rows in every sharded table of a shard.
func (s *stack) rowsOf(t *testing.T, shard string, tenant int64) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range demo.Tables {
		var n int64
		if err := s.conns[shard].QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*) FROM %s WHERE tenant_id = $1`, table), tenant).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

// TestPausedDriverDeletesNothing: a driver is paused (SIGSTOP) while it deletes a moved
// range from its old shard, past its lock's lease. Another driver takes the migration
// over and finishes it, and the range then moves back to that old shard. When the first
// driver wakes up it must not delete a single row more: the old shard owns the range again.
// Before the fix it went on deleting, and the moved-back tenant lost its rows.
func TestPausedDriverDeletesNothing(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 13)
	tenant, r, from, to := s.tenantMove(0)
	before := s.rowsOf(t, from, tenant)

	a := s.startMove(t, "paused_delete", r, to, "", "", "--delete-batch", "20", "--delete-pause", "200ms")
	s.waitPhase(t, a, "paused_delete", catalog.PhaseCleaningUp, nil)
	time.Sleep(500 * time.Millisecond) // a few batches in
	a.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { _ = a.cmd.Process.Kill() })
	s.finishMove(t, "paused_delete", r, to) // waits out the lease, then deletes the rest
	back := s.finishMove(t, "moved_back", r, from)
	t.Logf("moved back: %d rows copied", back.RowsCopied)
	a.signal(t, syscall.SIGCONT)
	select {
	case err := <-a.done:
		t.Logf("the paused driver ended: %v: %s", err, lastLine(a.log()))
	case <-time.After(90 * time.Second):
		t.Errorf("the paused driver did not stop within 90s of waking")
		_ = a.cmd.Process.Kill()
	}
	after := s.rowsOf(t, from, tenant)
	for table, n := range before {
		if after[table] != n {
			t.Errorf("%s: tenant %d has %d rows on %s, had %d before the moves", table, tenant, after[table], from, n)
		}
	}
	s.check(ctx, nil)
}

// TestPausedDriverRacesSecondDriver: a live driver is paused (SIGSTOP) past its lease
// during the copy, the catch-up and the cutover, under a live load; a second driver takes
// the migration over and finishes it; then the first one wakes up (SIGCONT). Whatever the
// first one still tries, the end is one owner per range, every acknowledged write exactly
// once on its owner, and every tenant's rows where they belong.
func TestPausedDriverRacesSecondDriver(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.5, Seed: 14})
	stop := s.runLoad(3, 0, 14)
	for i, tt := range []struct {
		name  string
		hold  string // a step to hold after before the pause, or ""
		phase string // else: the journal phase to pause in
		extra []string
	}{
		{name: "copy", phase: catalog.PhaseCopying, extra: []string{"--max-rate", "1000000"}},
		{name: "catch_up", hold: "catch-up"},
		{name: "cutover", hold: "drain"},
	} {
		tenant, r, _, to := s.tenantMove(i)
		id := "paused_" + tt.name
		hold := ""
		if tt.hold != "" {
			hold = holdFile(t)
		}
		a := s.startMove(t, id, r, to, tt.hold, hold, tt.extra...)
		t.Cleanup(func() { _ = a.cmd.Process.Kill() })
		if tt.hold != "" {
			a.waitHeld(t)
		} else {
			s.waitPhase(t, a, id, tt.phase, nil)
			time.Sleep(time.Second) // well into the copy: at 1 MB/s it takes about 4s
		}
		a.signal(t, syscall.SIGSTOP)
		if hold != "" {
			if err := os.Remove(hold); err != nil {
				t.Fatal(err)
			}
		}
		m := s.finishMove(t, id, r, to)
		a.signal(t, syscall.SIGCONT)
		select {
		case err := <-a.done:
			t.Logf("%s: the paused driver ended: %v: %s", id, err, lastLine(a.log()))
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the paused driver did not stop within 30s of waking:\n%s", id, a.log())
		}
		s.wantServing(t, tenant, to)
		t.Logf("%s: finished by the second driver, window %.1fms", id, m.Timings.CutoverWindow*1000)
	}
	res := stop()
	s.check(ctx, res)
}

// TestKilledCopyResumesWithUnfinishedChunks kills `reshard move` with SIGKILL once about
// half of the copy of a 220k-row tenant is done, under a live load that writes into it; the
// re-run copies only the chunks the journal does not call done (under 60% of the range's
// rows, from a new snapshot) and catches up from the slot's original consistent point. At
// the end every tenant's rows on every shard are as they should be.
func TestKilledCopyResumesWithUnfinishedChunks(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.2, Seed: 13})
	big := s.tenants[0].ID
	r := catalog.NewRange(big, big+1)
	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from, _ := st.Owner(big)
	to := map[string]string{"s1": "s2", "s2": "s1"}[from.Shard]
	// The big tenant grows by 220k orders, and a neighbour on its shard by more, so that
	// the range is under half of the table and its copy is cut into key chunks.
	var neighbour int64
	found := false
	for _, tn := range s.tenants[1:] {
		if o, _ := st.Owner(tn.ID); o.Shard == from.Shard && !found {
			neighbour, found = tn.ID, true
		}
	}
	if !found {
		t.Fatal("no neighbour of the big tenant on its shard")
	}
	src := s.conns[from.Shard]
	for _, g := range []struct {
		tenant int64
		rows   int
	}{{big, 220_000}, {neighbour, 240_000}} {
		if _, err := src.Exec(ctx, `INSERT INTO orders (tenant_id, status, total, created_at)
			SELECT $1, 'bulk', (i % 100000) / 100.0, now() - (i % 1000) * interval '1 minute' FROM generate_series(1, $2::int) i`, g.tenant, g.rows); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Exec(ctx, "ANALYZE orders"); err != nil {
		t.Fatal(err)
	}
	if s.before, err = demo.TakeSnapshot(ctx, s.queriers(), demo.Tables); err != nil {
		t.Fatal(err)
	}
	var rangeRows int64
	if err := src.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenants WHERE tenant_id = $1) + (SELECT count(*) FROM orders WHERE tenant_id = $1)
		+ (SELECT count(*) FROM order_items WHERE tenant_id = $1) + (SELECT count(*) FROM ledger WHERE tenant_id = $1)
		+ (SELECT count(*) FROM events WHERE tenant_id = $1)`, big).Scan(&rangeRows); err != nil {
		t.Fatal(err)
	}
	stop := s.runLoad(3, 200, 17)

	d := s.startMove(t, "resume_copy", r, to, "", "", "--max-rate", "8000000")
	runs := 0
	for deadline := time.Now().Add(3 * time.Minute); runs == 0; time.Sleep(5 * time.Millisecond) {
		m, err := s.store.GetMigration(ctx, "resume_copy")
		if err == nil && m.Phase == catalog.PhaseCopying && 2*copiedRows(m.Copy, 0) >= rangeRows {
			if err := d.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			runs = m.Copy.Runs
			t.Logf("killed with %d of %d rows copied", copiedRows(m.Copy, 0), rangeRows)
		}
		select {
		case err := <-d.done:
			t.Fatalf("move ended before half its copy was seen done: %v\n%s", err, d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("half the copy was never seen done:\n%s", d.log())
		}
	}
	<-d.done
	// The plan's chunks are read before the cleanup: its first write deletes them.
	d, hold := s.heldMove(t, "resume_copy", r, to, "cleanup")
	m, err := s.store.GetMigration(ctx, "resume_copy")
	if err != nil {
		t.Fatal(err)
	}
	again := copiedRows(m.Copy, runs)
	if m.Copy.Runs <= runs || float64(again) >= 0.6*float64(rangeRows) {
		t.Errorf("after the kill the copy ran %d more times and copied %d of the range's %d rows, want under 60%%", m.Copy.Runs-runs, again, rangeRows)
	}
	t.Logf("the re-run copied %d of the range's %d rows", again, rangeRows)
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	if err := <-d.done; err != nil {
		t.Fatalf("the re-run after its cleanup: %v\n%s", err, d.log())
	}
	if m, err = s.store.GetMigration(ctx, "resume_copy"); err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("after the re-run: %v, %v; want done", m, err)
	}
	if n := migratetest.PlanPages(t, ctx, s.store, "resume_copy"); n != 0 {
		t.Errorf("%d keys under copyplans/resume_copy/ once the move is done, want none", n)
	}
	res := stop()
	s.check(ctx, res)
}

// heldMove re-runs a move until it holds after step (the dead driver's lock expires within
// its TTL), and returns it with the hold file to remove.
func (s *stack) heldMove(t *testing.T, id string, r catalog.KeyRange, to, step string) (*driver, string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		hold := holdFile(t)
		d := s.startMove(t, id, r, to, step, hold)
		select {
		case <-d.held:
			return d, hold
		case err := <-d.done:
			if time.Now().After(deadline) {
				t.Fatalf("move %s never held after %s: %v\n%s", id, step, err, d.log())
			}
			t.Logf("re-run of %s: %v (retrying): %s", id, err, lastLine(d.log()))
		}
	}
}

// copiedRows sums the rows of the chunks done by runs after the given one.
func copiedRows(p *catalog.CopyPlan, after int) int64 {
	var n int64
	if p == nil {
		return 0
	}
	for _, tb := range p.Tables {
		for _, c := range tb.Chunks {
			if c.Done && c.Run > after {
				n += c.Rows
			}
		}
	}
	return n
}
