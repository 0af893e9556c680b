package integration

import (
	"context"
	"fmt"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
)

// TestMoveWithGuardAlwaysOnBothShards: with the fence trigger ALWAYS-enabled (it fires in
// replica-mode sessions too) on the source and on a target that holds a tombstone fence
// over the incoming range (the range once left it), a move still copies and catches up:
// every reshard session that writes through the trigger passes by reshard.bypass. Writes
// made during the catch-up (one of them by a replica-mode session) reach the target, and
// afterwards every tenant's rows, moved or not, are on its owner exactly as they were on
// the source, and nowhere else.
func TestMoveWithGuardAlwaysOnBothShards(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 9)
	tenant, r, from, to := s.tenantMove(0)
	target := s.conns[to]
	if err := cutover.InstallGuard(ctx, target, catalog.RangeOn(demo.Key), demo.Tables); err != nil {
		t.Fatal(err)
	}
	if err := cutover.MarkTombstone(ctx, target, "earlier_move_away", r, 0); err != nil {
		t.Fatal(err)
	}
	catchupWrites := func() {
		// While the catch-up runs: writes to the moving tenant, one of them from a
		// replica-mode session (the guard fires for it, and no fence is set yet), and to
		// a tenant that stays.
		c := s.conns[from]
		stay := s.tenants[1].ID
		for _, sql := range []string{
			fmt.Sprintf(`INSERT INTO ledger (tenant_id, amount, memo) VALUES (%d, 1.50, 'catch-up')`, tenant),
			fmt.Sprintf(`UPDATE tenants SET balance = balance + 1.50 WHERE tenant_id = %d`, tenant),
			fmt.Sprintf(`SET session_replication_role = replica; INSERT INTO ledger (tenant_id, amount, memo) VALUES (%d, 2.25, 'replica'); UPDATE tenants SET balance = balance + 2.25 WHERE tenant_id = %d; RESET session_replication_role`, tenant, tenant),
			fmt.Sprintf(`INSERT INTO ledger (tenant_id, amount, memo) VALUES (%d, 3.00, 'stays'); UPDATE tenants SET balance = balance + 3.00 WHERE tenant_id = %d`, stay, stay),
		} {
			if _, err := c.Exec(ctx, sql); err != nil {
				t.Errorf("write during the catch-up: %s: %v", sql, err)
			}
		}
		// Every tenant's rows as they must end up (check compares with s.before); the
		// target's copy is not the range's yet.
		before, err := demo.TakeSnapshot(ctx, s.queriers(), demo.Tables)
		if err != nil {
			t.Fatal(err)
		}
		before[to] = before[to].Only(func(tn int64) bool { return !r.Contains(tn) })
		s.before = before
	}
	ex := s.executor(migrate.ExecOptions{BeforeCutover: catchupWrites})
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: "always_guard", Range: r, Target: to})
	if err != nil || m.Phase != catalog.PhaseDone {
		t.Fatalf("move: %v, %+v", err, m)
	}
	for name, c := range s.conns {
		var notAlways int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence' AND tgenabled <> 'A'`).Scan(&notAlways); err != nil {
			t.Fatal(err)
		}
		if notAlways != 0 {
			t.Errorf("shard %s: %d fence triggers not ALWAYS-enabled", name, notAlways)
		}
	}
	s.check(ctx, nil)
}

// TestDropFenceKeepsGuardOfAnotherMigration: two migrations leave the same source. The
// first finishes and is cleaned up with --drop-fence while the second is catching up; the
// guard trigger must stay (the second migration has the shard as its source), so the
// second one's cutover still fences: a write to its range during its window fails with
// RS001.
func TestDropFenceKeepsGuardOfAnotherMigration(t *testing.T) {
	ctx := context.Background()
	s := smallStack(t, 4)
	st, _ := s.store.Load(ctx)
	var on1 []int64 // tenants on s1, to move to s2
	for _, tn := range s.tenants {
		if o, _ := st.Owner(tn.ID); o.Shard == "s1" {
			on1 = append(on1, tn.ID)
		}
	}
	if len(on1) < 2 {
		t.Fatalf("want two tenants on s1, have %d", len(on1))
	}
	r1, r2 := catalog.NewRange(on1[0], on1[0]+1), catalog.NewRange(on1[1], on1[1]+1)
	s.carve(r1)
	s.carve(r2)

	caughtUp, release := make(chan struct{}), make(chan struct{})
	var fencedWrite error
	ex2 := s.executor(migrate.ExecOptions{BeforeCutover: func() {
		close(caughtUp)
		<-release
	}})
	ex2.Options.Cutover.AfterStep = func(step string) {
		if step == "fence" {
			_, fencedWrite = s.conns["s1"].Exec(ctx, `UPDATE tenants SET name = name WHERE tenant_id = $1`, on1[1])
		}
	}
	done2 := make(chan error, 1)
	go func() {
		_, err := ex2.Move(ctx, migrate.MoveRequest{ID: "second", Range: r2, Target: "s2"})
		done2 <- err
	}()
	select {
	case <-caughtUp:
	case err := <-done2:
		t.Fatalf("second move ended before its cutover: %v", err)
	}

	ex1 := s.executor(migrate.ExecOptions{CleanupLater: true})
	if m, err := ex1.Move(ctx, migrate.MoveRequest{ID: "first", Range: r1, Target: "s2"}); err != nil || m.Phase != catalog.PhaseCleaningUp {
		close(release)
		t.Fatalf("first move: %v, %+v", err, m)
	}
	if m, err := ex1.Cleanup(ctx, "first", true); err != nil || m.Phase != catalog.PhaseDone {
		close(release)
		t.Fatalf("cleanup --drop-fence of the first move: %v, %+v", err, m)
	}
	var triggers int
	if err := s.conns["s1"].QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence' AND tgenabled = 'A'`).Scan(&triggers); err != nil {
		t.Fatal(err)
	}
	if triggers == 0 {
		t.Errorf("cleanup --drop-fence of the first move removed the guard trigger the second move (catching up on s1) needs")
	}

	close(release)
	if err := <-done2; err != nil {
		t.Fatalf("second move: %v", err)
	}
	if !cutover.IsFenceError(fencedWrite) {
		t.Errorf("write to the second move's range during its window: %v, want SQLSTATE %s", fencedWrite, cutover.FenceSQLState)
	}
	s.check(ctx, nil)
}

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
