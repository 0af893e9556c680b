package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
)

// bigTenantRows is the rows added to one tenant's events so that its range is large.
const bigTenantRows = 200_000

// growTenant adds n events to tenant on shard, server-side, and takes the stack's
// fingerprint again (the check compares every tenant with it).
func (s *stack) growTenant(t *testing.T, shard string, tenant int64, n int) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.conns[shard].Exec(ctx, `INSERT INTO events (tenant_id, created_at, kind, payload)
		SELECT $1, now() - (g % 3600) * interval '1 second', 'bulk', jsonb_build_object('g', g)
		FROM generate_series(1, $2::int) g`, tenant, n); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.before, err = demo.TakeSnapshot(ctx, s.queriers(), demo.Tables); err != nil {
		t.Fatal(err)
	}
}

// rangeRows counts r's rows over every table on shard.
func (s *stack) rangeRows(t *testing.T, shard string, r catalog.KeyRange) int64 {
	t.Helper()
	var total int64
	for _, tb := range demo.Tables {
		var n int64
		q := fmt.Sprintf("SELECT count(*) FROM %s WHERE %s", tb, r.SQL(demo.Key))
		if err := s.conns[shard].QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// TestWindowComparesOnlyRowsChangedSinceTheOnlineVerify: a tenant of more than 200k rows,
// the busiest of the load, moves while the load writes to it. The whole range is verified
// online before the freeze; the window compares only the rows the apply changed since the
// online verification's position: at most the row changes since then, and far fewer than
// the range holds. Every tenant's rows on every shard are as they should be afterwards.
func TestWindowComparesOnlyRowsChangedSinceTheOnlineVerify(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.1, Seed: 11})
	hot := s.tenants[0] // the heaviest and busiest: never quiet
	st := s.catalogNow(ctx)
	owner, _ := st.Owner(hot.ID)
	to := map[string]string{"s1": "s2", "s2": "s1"}[owner.Shard]
	s.growTenant(t, owner.Shard, hot.ID, bigTenantRows)
	r := catalog.NewRange(hot.ID, hot.ID+1)
	size := s.rangeRows(t, owner.Shard, r)
	s.carve(r)

	stopLoad := s.runLoad(4, 300, 11)
	time.Sleep(500 * time.Millisecond)
	m, err := s.executor(migrate.ExecOptions{CutoverRetries: 3}).Move(ctx, migrate.MoveRequest{ID: "big", Range: r, Target: to})
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	result := stopLoad()

	v := m.Verify
	if v == nil {
		t.Fatalf("the move recorded no verification: %+v", m)
	}
	t.Logf("range of %d rows: verified online %d rows in %d chunks (%.2fs) at %s; then %d row changes, %d rows compared in the window of %.1fms",
		size, v.OnlineRows, v.OnlineChunks, v.OnlineSeconds, v.LSN, v.ChangedSince, v.WindowRows, m.Timings.CutoverWindow*1000)
	if v.OnlineRows < bigTenantRows || v.LSN == "" {
		t.Errorf("online verify covered %d rows at %q, want the whole range (%d rows) at a position", v.OnlineRows, v.LSN, size)
	}
	if v.ChangedSince == 0 {
		t.Errorf("the load changed no row of the range between the online verify and the fence: the window compared nothing to show")
	}
	if v.WindowRows > v.ChangedSince {
		t.Errorf("the window compared %d rows, more than the %d row changes since the online verify", v.WindowRows, v.ChangedSince)
	}
	if v.WindowRows*10 > size {
		t.Errorf("the window compared %d rows of a range of %d: it grows with the range", v.WindowRows, size)
	}
	if result.Failed > 0 {
		t.Errorf("%d transactions failed: %v", result.Failed, result.Errors)
	}
	s.check(ctx, result)
}

// TestOnlineVerifyFindsACorruptedRowAndRefusesToFlip: a row of the range changed on the
// target behind the mover's back (through the fence bypass) after the catch-up caught
// up is found by the online verification before the freeze, named by its primary key,
// and the move rolls back instead of flipping. Every tenant's rows on every shard are as
// they were (the target's copy, the corrupted row with it, is removed).
func TestOnlineVerifyFindsACorruptedRowAndRefusesToFlip(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.1, Seed: 12})
	st := s.catalogNow(ctx)
	var victim demo.Tenant
	for _, tn := range s.tenants {
		if owner, _ := st.Owner(tn.ID); owner.Shard == "s1" && s.quiet[tn.ID] && tn.Orders > 0 {
			victim = tn
			break
		}
	}
	if victim.ID == 0 {
		t.Fatal("no quiet tenant with orders on s1")
	}
	r := catalog.NewRange(victim.ID, victim.ID+1)
	s.carve(r)
	stopLoad := s.runLoad(2, 200, 12)

	var corrupted int64
	ex := s.executor(migrate.ExecOptions{})
	ex.Options.BeforeCutover = func() {
		if corrupted != 0 {
			return
		}
		err := s.conns["s2"].QueryRow(ctx, `WITH b AS (SELECT set_config($2, 'on', false))
			UPDATE orders SET total = total + 1 FROM b
			WHERE tenant_id = $1 AND id = (SELECT min(id) FROM orders WHERE tenant_id = $1) RETURNING id`,
			victim.ID, cutover.BypassSetting).Scan(&corrupted)
		if err != nil {
			t.Errorf("corrupt a row on the target: %v", err)
		}
		if _, err := s.conns["s2"].Exec(ctx, "SELECT set_config($1, 'off', false)", cutover.BypassSetting); err != nil {
			t.Error(err)
		}
	}
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: "corrupt", Range: r, Target: "s2"})
	result := stopLoad()
	if err == nil {
		t.Fatalf("the move flipped over a corrupted row: %+v", m)
	}
	t.Logf("move refused: %v", err)
	key := fmt.Sprintf("orders (tenant_id, id)=(%d, %d): differs", victim.ID, corrupted)
	if !errors.Is(err, cutover.ErrMismatch) || !strings.Contains(err.Error(), "online verify") || !strings.Contains(err.Error(), key) {
		t.Errorf("error = %v; want the online verify's mismatch naming %q", err, key)
	}
	if m == nil || m.Phase != catalog.PhaseRolledBack {
		t.Errorf("migration = %+v; want rolled back", m)
	}
	st = s.catalogNow(ctx)
	if owner, _ := st.Owner(victim.ID); owner.Shard != "s1" || owner.State != catalog.RangeServing {
		t.Errorf("the range is %s on %s; want serving on s1", owner.State, owner.Shard)
	}
	s.check(ctx, result)
}

// verifyOut is what `reshard verify ID -o json` prints.
type verifyOut struct {
	OK           bool   `json:"ok"`
	Error        string `json:"error"`
	Apart        string `json:"not_at_one_position"`
	LSN          string `json:"lsn"`
	Verification struct {
		Rows   int64 `json:"rows"`
		Tables []struct {
			Table      string `json:"table"`
			Rows       int64  `json:"rows"`
			TargetRows int64  `json:"target_rows"`
		} `json:"tables"`
	} `json:"verification"`
}

// reshardVerify runs the reshard binary's verify with args, bounded by two minutes.
func (s *stack) reshardVerify(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, reshardBinary(t), append([]string{"verify", "--etcd", s.endpoint(), "--cluster", cluster}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("reshard verify: %v", err)
	}
	return out.String(), errb.String(), code
}

// bypassExec runs sql on shard through the fence bypass.
func (s *stack) bypassExec(t *testing.T, shard, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	c := s.conns[shard]
	if _, err := c.Exec(ctx, "SELECT set_config($1, 'on', false)", cutover.BypassSetting); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT set_config($1, 'off', false)", cutover.BypassSetting); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyIDIsExactAtOnePositionWhileCatchingUp: `reshard verify ID` (the binary) of a
// migration catching up under a live write load inside its range, its driver in this
// process, compares both sides at one source position, which its driver holds its apply
// at: equal every time, each table's rows the same on both sides, while the load goes on;
// a row only the target has (written through the fence bypass) is named by its primary
// key. The move then finishes; every tenant's rows on every shard are checked.
func TestVerifyIDIsExactAtOnePositionWhileCatchingUp(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.1, Seed: 13})
	hot := s.tenants[0] // the busiest of the load
	st := s.catalogNow(ctx)
	owner, _ := st.Owner(hot.ID)
	to := other(owner.Shard)
	r := catalog.NewRange(hot.ID, hot.ID+1)
	s.carve(r)
	reshardBinary(t) // built before the load starts

	stopLoad := s.runLoad(4, 300, 13)
	caught, free := make(chan struct{}), make(chan struct{})
	var once, freeOnce sync.Once
	release := func() { freeOnce.Do(func() { close(free) }) }
	t.Cleanup(release)
	ex := s.executor(migrate.ExecOptions{CutoverRetries: 3, BeforeCutover: func() {
		once.Do(func() { close(caught); <-free })
	}})
	type moved struct {
		m   *catalog.Migration
		err error
	}
	done := make(chan moved, 1)
	go func() {
		m, err := ex.Move(ctx, migrate.MoveRequest{ID: "vid", Range: r, Target: to})
		done <- moved{m, err}
	}()
	select {
	case <-caught:
	case res := <-done:
		t.Fatalf("the move ended before catching up: %+v, %v", res.m, res.err)
	}

	for i := range 3 {
		stdout, stderr, code := s.reshardVerify(t, "vid", "-o", "json")
		var out verifyOut
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || code != 0 || !out.OK || out.Apart != "" || out.LSN == "" {
			t.Fatalf("verify %d: exit %d, %v: %+v\n%s%s", i, code, err, out, stdout, stderr)
		}
		for _, tb := range out.Verification.Tables {
			if tb.Rows != tb.TargetRows {
				t.Errorf("verify %d: %s: %d rows on the source, %d on the target at %s", i, tb.Table, tb.Rows, tb.TargetRows, out.LSN)
			}
		}
		t.Logf("verify %d: equal at %s, %d rows", i, out.LSN, out.Verification.Rows)
	}

	s.bypassExec(t, to, "INSERT INTO orders (tenant_id, id, status, total) VALUES ($1, -1, 'new', 1)", hot.ID)
	stdout, stderr, code := s.reshardVerify(t, "vid")
	key := fmt.Sprintf("orders (tenant_id, id)=(%d, -1): missing on source", hot.ID)
	if code != 1 || !strings.Contains(stdout, key) || !strings.Contains(stdout, "at source position") || strings.Contains(stderr, "not at one") {
		t.Errorf("verify over a row only the target has: exit %d; want 1 naming %q at one position:\n%s%s", code, key, stdout, stderr)
	}
	s.bypassExec(t, to, "DELETE FROM orders WHERE tenant_id = $1 AND id = -1", hot.ID)

	release()
	res := <-done
	result := stopLoad()
	if res.err != nil || res.m.Phase != catalog.PhaseDone {
		t.Fatalf("move: %+v, %v; want done", res.m, res.err)
	}
	if result.Failed > 0 {
		t.Errorf("%d transactions failed: %v", result.Failed, result.Errors)
	}
	s.check(ctx, result)
}
