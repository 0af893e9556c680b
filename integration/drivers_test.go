package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/planner"
)

// writePlan writes a plan of moves over the catalog as it is now (each move a whole
// catalog range, given by its low key), as `reshard plan --out` would, and returns its path.
func (s *stack) writePlan(t *testing.T, id string, moves ...planner.Step) string {
	t.Helper()
	st := s.catalogNow(context.Background())
	p := &planner.Plan{Version: planner.FormatVersion, ID: id, Cluster: cluster, Revision: st.Revision}
	for i, m := range moves {
		r, ok := st.Owner(m.Range.Lo)
		if !ok || !r.Range.Equal(m.Range) || r.Shard != m.From {
			t.Fatalf("move %s from %s: the catalog has %+v", m.Range, m.From, r)
		}
		m.N, m.Kind = i+1, planner.StepMove
		p.Steps, p.Moves = append(p.Steps, m), p.Moves+1
		key := catalog.RangeKey(r.Range.Lo)
		p.Ranges = append(p.Ranges, planner.RangeRevision{Range: r.Range, Key: key, ModRevision: st.ModRev[key]})
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), id+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startApply starts `reshard apply --auto-approve` of planFile; hold names the step to hold
// after (see startMove).
func (s *stack) startApply(t *testing.T, planFile, hold, holdFile string) *driver {
	t.Helper()
	args := []string{"apply", planFile, "--auto-approve", "--etcd", s.endpoint(), "--cluster", cluster,
		"--lock-ttl", "2", "--catchup-timeout", "20s", "--straggler-timeout", "2s"}
	var env []string
	if hold != "" {
		env = append(env, "RESHARD_TEST_HOLD="+hold, "RESHARD_TEST_HOLD_FILE="+holdFile)
	}
	return startDriver(t, args, env)
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTwoApplyDriversOneKilled: two `reshard apply` processes run one plan of four moves
// (two pairs of shards, so both drivers move at once) under a live routed write load.
// Driver A is killed with SIGKILL in the middle of its move (caught up, before the
// cutover) once driver B runs a move of its own. B finishes every step, the orphaned one
// too (taken over once A's lease expires, resumed from its journal), and exits 0 saying
// the plan is done. Each move flipped once; every range has one owner and serves; every
// tenant's rows on every shard, and every acknowledged write, are where they should be.
func TestTwoApplyDriversOneKilled(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 4, demo.DataOptions{Tenants: 32, Scale: 0.05, Seed: 17})
	st := s.catalogNow(ctx)
	r := map[string]catalog.KeyRange{}
	for _, rr := range st.Ranges {
		r[rr.Shard] = rr.Range
	}
	mv := func(shard, to string) planner.Step {
		return planner.Step{Range: r[shard], From: shard, To: to, Reason: "test"}
	}
	// Steps 1 and 3 share s1 and s2, steps 2 and 4 share s3 and s4.
	plan := s.writePlan(t, "pdrivers", mv("s1", "s2"), mv("s3", "s4"), mv("s2", "s1"), mv("s4", "s3"))
	stop := s.runLoad(3, 0, 23)

	holdFile := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(holdFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.startApply(t, plan, "catch-up", holdFile)
	select {
	case <-a.held:
	case err := <-a.done:
		t.Fatalf("driver A ended before its hold: %v\n%s", err, a.log())
	case <-time.After(3 * time.Minute):
		t.Fatalf("driver A: no hold after 3m:\n%s", a.log())
	}
	orphan, err := s.store.GetMigration(ctx, "pdrivers_1")
	if err != nil || orphan.Flipped() {
		t.Fatalf("driver A's move while it holds: %+v, %v; want started, not flipped", orphan, err)
	}
	b := s.startApply(t, plan, "", "")
	waitFor(t, "driver B starts a move of its own", 3*time.Minute, func() bool {
		_, err := s.store.GetMigration(ctx, "pdrivers_2")
		return err == nil
	})
	if holder, held, err := s.store.MigrationLockHolder(ctx, "pdrivers_1"); err != nil || !held || !strings.Contains(holder, fmt.Sprintf("pid %d ", a.cmd.Process.Pid)) {
		t.Errorf("pdrivers_1's lock: %q, held %v, %v; want held by driver A (pid %d)", holder, held, err, a.cmd.Process.Pid)
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("driver A killed during pdrivers_1 (%s):\n%s", orphan.Phase, a.log())
	<-a.done

	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("driver B: %v\n%s", err, b.log())
		}
	case <-time.After(6 * time.Minute):
		t.Fatalf("driver B did not end in 6m:\n%s", b.log())
	}
	out := b.log()
	t.Logf("driver B:\n%s", out)
	if !strings.Contains(out, "summary: 4 of 4 moves done") {
		t.Errorf("driver B's summary does not say the plan is done")
	}
	st = s.check(ctx, stop())
	flips := s.flips(ctx)
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("pdrivers_%d", i)
		if m, ok := st.Migrations[id]; !ok || m.Phase != catalog.PhaseDone || flips[id] != 1 {
			t.Errorf("migration %s: %+v, flipped %d times; want done, flipped once", id, m.Phase, flips[id])
		}
	}
	for shard, want := range map[string]string{"s1": "s2", "s3": "s4", "s2": "s1", "s4": "s3"} {
		if o, _ := st.Owner(r[shard].Lo); !o.Range.Equal(r[shard]) || o.Shard != want {
			t.Errorf("range %s (was on %s): %+v; want it on %s", r[shard], shard, o, want)
		}
	}
}

// flips counts the history's ownership flips per migration.
func (s *stack) flips(ctx context.Context) map[string]int {
	s.t.Helper()
	evs, err := s.store.History(ctx, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	out := map[string]int{}
	for _, ev := range evs {
		if ev.Kind == catalog.EventFlip {
			out[ev.Migration]++
		}
	}
	return out
}
