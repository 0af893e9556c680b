package integration

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
)

// TestTargetRefusesMisroutedWrites: from the start of a move until its flip, the target
// refuses client writes to the incoming range with RS001, as the source does once fenced:
// a misrouted client (or one that switched shards on RS001 without asking the catalog)
// cannot get a write acknowledged there that a rollback would then delete. After the flip
// the target takes them. Before the fix the target accepted them.
func TestTargetRefusesMisroutedWrites(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 12)
	tenant, r, _, to := s.tenantMove(0)
	misrouted := func() error {
		_, err := s.conns[to].Exec(ctx, `INSERT INTO ledger (tenant_id, amount, memo) VALUES ($1, 0, 'misrouted')`, tenant)
		return err
	}
	var during error
	ex := s.executor(migrate.ExecOptions{BeforeCutover: func() { during = misrouted() }})
	if _, err := ex.Move(ctx, migrate.MoveRequest{ID: "misrouted", Range: r, Target: to}); err != nil {
		t.Fatal(err)
	}
	if !cutover.IsFenceError(during) {
		t.Errorf("write to the target during the move: %v, want the fence error RS001", during)
	}
	if err := misrouted(); err != nil {
		t.Errorf("write to the new owner after the move: %v", err)
	}
	// The row is not one the harness expects (no load ran): take it out again.
	if _, err := s.conns[to].Exec(ctx, `DELETE FROM ledger WHERE memo = 'misrouted'`); err != nil {
		t.Fatal(err)
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
