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
	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
