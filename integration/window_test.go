package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/migrate"
)

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
