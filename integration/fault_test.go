package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/mover"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// reshardBinary builds cmd/reshard once per test binary: the fault tests kill it with
// SIGKILL, which only a separate process can honestly suffer.
func reshardBinary(t *testing.T) string {
	t.Helper()
	testenv.Integration(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "reshard-it-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "reshard")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		out, err := exec.Command(goBin, append(args, "../cmd/reshard")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// driver is one `reshard move` process.
type driver struct {
	cmd    *exec.Cmd
	held   chan string // the step it holds after
	done   chan error
	stderr strings.Builder
	mu     sync.Mutex
}

// startMove starts `reshard move` for r; hold names the step to hold after (see testHold in
// cmd/reshard), extra are more flags.
func (s *stack) startMove(t *testing.T, id string, r catalog.KeyRange, to, hold, holdFile string, extra ...string) *driver {
	t.Helper()
	args := []string{"move", "--etcd", s.endpoint(), "--cluster", cluster, "--id", id, "--range", r.String(), "--to", to,
		"--lock-ttl", "2", "--catchup-timeout", "20s", "--straggler-timeout", "2s", "--cleanup", "now"}
	args = append(args, extra...)
	var env []string
	if hold != "" {
		env = append(env, "RESHARD_TEST_HOLD="+hold, "RESHARD_TEST_HOLD_FILE="+holdFile)
	}
	return startDriver(t, args, env)
}

// startDriver starts the reshard binary with args (and env added to the test's), its log
// at info on stderr, which it keeps and scans for the test hold's line.
func startDriver(t *testing.T, args, env []string) *driver {
	t.Helper()
	cmd := exec.Command(reshardBinary(t), args...)
	cmd.Env = append(append(os.Environ(), "RESHARD_LOG=info"), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{cmd: cmd, held: make(chan string, 1), done: make(chan error, 1)}
	cmd.Stdout = d // what it prints (an apply's steps and summary) joins its log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.stderr.WriteString(line + "\n")
			d.mu.Unlock()
			if step, ok := strings.CutPrefix(line, "reshard-test: holding after "); ok {
				d.held <- step
			}
		}
		d.done <- cmd.Wait()
	}()
	return d
}

// Write keeps the driver's standard output with its log.
func (d *driver) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.Write(p)
}

func (d *driver) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// holdFile makes the file a driver started with a hold waits on while it exists.
func holdFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitHeld waits until the driver holds after a step and returns the step's name.
func (d *driver) waitHeld(t *testing.T) string {
	t.Helper()
	select {
	case step := <-d.held:
		return step
	case err := <-d.done:
		t.Fatalf("move ended before the hold: %v\n%s", err, d.log())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no hold after 2m:\n%s", d.log())
	}
	return ""
}

// endpoint is the --etcd of the stack's etcd: every member's, comma-separated, for a
// replicated one.
func (s *stack) endpoint() string {
	if s.etcd != nil {
		return strings.Join(s.etcd.Endpoints(), ",")
	}
	return fmt.Sprintf("127.0.0.1:%d", s.etcdPorts[0])
}

// finishMove re-runs a move until it ends (the dead driver's lock expires within its TTL).
func (s *stack) finishMove(t *testing.T, id string, r catalog.KeyRange, to string) *catalog.Migration {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		d := s.startMove(t, id, r, to, "", "")
		err := <-d.done
		m, gerr := s.store.GetMigration(context.Background(), id)
		if err == nil && gerr == nil && m.Phase == catalog.PhaseDone {
			t.Logf("re-run %d finished %s:\n%s", attempt, id, d.log())
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("move %s did not finish: %v\n%s", id, err, d.log())
		}
		t.Logf("re-run %d of %s: %v (retrying): %s", attempt, id, err, lastLine(d.log()))
		time.Sleep(time.Second)
	}
}

// TestKillDriver kills `reshard move` with SIGKILL between the fence and the flip, and
// right after the flip, under a live load. A re-run finishes each move; at the end every
// range has exactly one owner and no acknowledged write is lost or duplicated.
func TestKillDriver(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 3, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 5})
	stop := s.runLoad(3, 0, 11)
	tests := []struct {
		hold       string
		wantFrozen bool // the range is still frozen in the catalog after the kill
		wantPhase  string
	}{
		{hold: "fence", wantFrozen: true, wantPhase: catalog.PhaseFrozen},
		{hold: "verify", wantFrozen: true, wantPhase: catalog.PhaseVerifying},
		{hold: "flip", wantFrozen: false, wantPhase: catalog.PhaseFlipped},
	}
	for i, tt := range tests {
		tenant, r, from := s.tenantRange(i)
		to := "s2"
		if from == "s2" {
			to = "s3"
		}
		id := "kill_" + strings.ReplaceAll(tt.hold, " ", "_")
		d := s.startMove(t, id, r, to, tt.hold, holdFile(t))
		if step := d.waitHeld(t); step != tt.hold {
			t.Fatalf("held after %q, want %q", step, tt.hold)
		}
		if err := d.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-d.done
		m, err := s.store.GetMigration(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := s.store.Load(ctx)
		cur, _ := st.Owner(tenant)
		if m.Phase != tt.wantPhase || (cur.State == catalog.RangeFrozen) != tt.wantFrozen {
			t.Fatalf("after kill at %s: phase %s, range %+v", tt.hold, m.Phase, cur)
		}
		m = s.finishMove(t, id, r, to)
		s.wantServing(t, tenant, to)
		t.Logf("%s: window %.1fms", id, m.Timings.CutoverWindow*1000)
	}
	res := stop()
	s.check(ctx, res)
}

// TestEtcdDownDuringCutover stops etcd after the verify step, so the flip cannot reach it.
// The range must stay fenced (never two owners); once etcd is back, the driver (or a
// re-run) finishes the move.
func TestEtcdDownDuringCutover(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 3, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 6})
	stop := s.runLoad(3, 0, 11)
	tenant, r, _ := s.tenantRange(0)
	hold := holdFile(t)
	d := s.startMove(t, "etcd_down", r, "s3", "verify", hold)
	d.waitHeld(t)
	s.stopEtcd()
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	// The driver now tries to flip with etcd gone. Whatever it does, the source keeps the
	// range fenced: a write there must fail with the fence error.
	time.Sleep(3 * time.Second)
	src := s.conns["s1"]
	if _, err := src.Exec(ctx, `INSERT INTO ledger (tenant_id, amount) VALUES ($1, 1)`, tenant); !cutover.IsFenceError(err) {
		t.Errorf("write to the source while etcd is down: %v, want the fence error", err)
	}
	s.startEtcd()
	select {
	case err := <-d.done:
		t.Logf("driver ended: %v\n%s", err, d.log())
	case <-time.After(90 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Logf("driver killed after 90s:\n%s", d.log())
	}
	m, err := s.store.GetMigration(ctx, "etcd_down")
	if err != nil {
		t.Fatal(err)
	}
	if m.Phase != catalog.PhaseDone {
		m = s.finishMove(t, "etcd_down", r, "s3")
	}
	s.wantServing(t, tenant, "s3")
	res := stop()
	s.check(ctx, res)
}

// TestSourceRestartDuringCatchup restarts the source PostgreSQL while the mover is catching
// up; the mover reconnects and resumes from reshard.progress, the executor reconnects its
// control connections, and the move finishes with nothing lost or duplicated.
func TestSourceRestartDuringCatchup(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 8})
	stop := s.runLoad(3, 0, 11)
	_, r, _ := s.tenantRange(0)
	restarted := false
	ex := s.executor(migrate.ExecOptions{CutoverRetries: 3})
	ex.Options.BeforeCutover = func() {
		if restarted {
			return
		}
		restarted = true
		if err := s.pgs[0].Restart(ctx); err != nil {
			t.Errorf("restart source: %v", err)
		}
		if err := s.reconnect(ctx, "s1"); err != nil {
			t.Error(err)
		}
	}
	m, err := ex.Move(ctx, migrate.MoveRequest{ID: "src_restart", Range: r, Target: "s2"})
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if !restarted || m.Phase != catalog.PhaseDone {
		t.Fatalf("restarted %v, phase %s", restarted, m.Phase)
	}
	res := stop()
	s.check(ctx, res)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestKillDuringCopyAndCatchup kills `reshard move` with SIGKILL while it copies (seen in
// the journal) and while its catch-up runs, under a live load; a re-run with the same id
// finishes each move with identical data (checked through the invariants and the verify
// the cutover does before every flip).
func TestKillDuringCopyAndCatchup(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.5, Seed: 9})
	stop := s.runLoad(3, 0, 11)

	// During the copy: the biggest tenant takes long enough to be caught copying.
	big := s.tenants[0].ID
	r := catalog.NewRange(big, big+1)
	s.carve(r)
	d := s.startMove(t, "kill_copy", r, "s2", "", "")
	killed := false
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !killed; time.Sleep(5 * time.Millisecond) {
		m, err := s.store.GetMigration(ctx, "kill_copy")
		if err == nil && m.Phase == catalog.PhaseCopying {
			if err := d.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		select {
		case err := <-d.done:
			t.Fatalf("move ended before it was seen copying: %v\n%s", err, d.log())
		default:
		}
	}
	if !killed {
		t.Fatal("the move was never seen copying")
	}
	<-d.done
	s.finishMove(t, "kill_copy", r, "s2")

	// During the catch-up: held once the target is caught up, before the cutover.
	_, r2, _, to := s.tenantMove(1)
	d = s.startMove(t, "kill_catchup", r2, to, "catch-up", holdFile(t))
	d.waitHeld(t)
	time.Sleep(500 * time.Millisecond) // let the load write more for the catch-up to carry
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	if m, _ := s.store.GetMigration(ctx, "kill_catchup"); m.Phase != catalog.PhaseCatchingUp {
		t.Fatalf("after the kill the journal says %s, want catching_up", m.Phase)
	}
	s.finishMove(t, "kill_catchup", r2, to)
	res := stop()
	s.check(ctx, res)
}

// leaderKiller kills the etcd leader when asked and restarts it a moment later, one member
// down at a time (a kill first waits for the previous member's restart), as a crash and a
// supervisor's restart would.
type leaderKiller struct {
	t       *testing.T
	c       *etcdserver.Cluster
	mu      sync.Mutex
	kills   []string
	restart sync.WaitGroup
}

func (k *leaderKiller) kill(where string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.restart.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	i, err := k.c.Leader(ctx)
	if err != nil {
		k.t.Errorf("kill during %s: %v", where, err)
		return
	}
	k.c.Kill(i)
	k.kills = append(k.kills, fmt.Sprintf("%s (m%d)", where, i))
	k.restart.Add(1)
	go func() {
		defer k.restart.Done()
		time.Sleep(1500 * time.Millisecond)
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := k.c.Restart(rctx, i); err != nil {
			k.t.Errorf("restart etcd member m%d: %v", i, err)
		}
	}()
}

func (k *leaderKiller) done() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.restart.Wait()
	return k.kills
}

// TestMovesThroughEtcdLeaderKills: a 3-member etcd; three moves, one after another, under a
// live write load routed by the catalog, while the etcd leader is killed (and restarted
// 1.5s later) during each move's copy (throttled so it lasts), once it is caught up, and
// inside its cutover (after the freeze, after the verify, right before the flip). Every move finishes, re-run at most once; every range has one owner and serves;
// every acknowledged write (unique ledger ids) is on its owner exactly once, and every
// tenant's rows on every shard are what the start plus the acknowledged writes make them.
func TestMovesThroughEtcdLeaderKills(t *testing.T) {
	ctx := context.Background()
	s := newStackOn(t, 3, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 29}, 3)
	k := &leaderKiller{t: t, c: s.etcd}
	stop := s.runLoad(3, 0, 31)

	var (
		mu     sync.Mutex
		copied = map[string]bool{}
		step   string // the cutover step after which the running move kills the leader
		id     string
	)
	ex := s.executor(migrate.ExecOptions{
		CutoverRetries: 3,
		Cutover: cutover.Options{StragglerTimeout: 2 * time.Second, CatchupTimeout: 30 * time.Second,
			AfterStep: func(st string) {
				mu.Lock()
				kill := st == step
				mu.Unlock()
				if kill {
					k.kill("cutover, after " + st + ", " + id)
				}
			}},
		BeforeCutover: func() { k.kill("catch-up, " + id) },
	})
	ex.NewMover = func(m *catalog.Migration, src, dst string, j *migrate.Journal, token int64) (migrate.Mover, error) {
		return mover.New(mover.Config{ID: m.ID, SourceDSN: src, TargetDSN: dst, Key: demo.Key, Tables: demo.Tables,
			Range: m.Range, Workers: 2, MaxConnections: 6, Token: token, MaxRate: 256 << 10,
			Progress: func(p mover.Progress) {
				mu.Lock()
				first := p.Phase == catalog.PhaseCopying && p.RowsCopied > 0 && !copied[p.ID]
				copied[p.ID] = copied[p.ID] || first
				mu.Unlock()
				if first {
					go k.kill("copy, " + p.ID)
				}
			}}, j)
	}

	st := s.catalogNow(ctx)
	moves := []struct {
		from, to, step string
	}{{"s1", "s2", "freeze"}, {"s2", "s3", "verify"}, {"s3", "s1", "sequences"}} // sequences: right before the flip
	for i, mv := range moves {
		var r catalog.KeyRange
		for _, rr := range st.Ranges {
			if rr.Shard == mv.from {
				r = rr.Range
			}
		}
		mu.Lock()
		step, id = mv.step, fmt.Sprintf("lk%d", i+1)
		mu.Unlock()
		m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: r, Target: mv.to})
		if err != nil {
			t.Logf("move %s: %v; re-running it once", id, err)
			if m, err = ex.Resume(ctx, id); err != nil {
				t.Fatalf("move %s failed twice: %v", id, err)
			}
		}
		if m.Phase != catalog.PhaseDone {
			t.Fatalf("move %s ended %s", id, m.Phase)
		}
		t.Logf("move %s done: window %.1fms", id, m.Timings.CutoverWindow*1000)
	}
	kills := k.done()
	t.Logf("leader kills: %d: %v", len(kills), kills)
	if len(kills) < 2*len(moves) {
		t.Errorf("%d leader kills; want at least two per move (catch-up and cutover) besides the copy's", len(kills))
	}
	st = s.check(ctx, stop())
	flips := s.flips(ctx)
	for i, mv := range moves {
		id := fmt.Sprintf("lk%d", i+1)
		if flips[id] != 1 {
			t.Errorf("move %s flipped %d times; want once", id, flips[id])
		}
		if m := st.Migrations[id]; m.Target != mv.to {
			t.Errorf("move %s went to %s; want %s", id, m.Target, mv.to)
		}
	}
}
