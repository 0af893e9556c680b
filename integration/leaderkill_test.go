package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/mover"
)

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

	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
