package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/internal/testenv"
)

func TestLockMigration(t *testing.T) {
	ctx := context.Background()
	a, b, bcli := twoProcesses(t, "driver-a", "driver-b")
	defer bcli.Close()

	la, err := a.LockMigration(ctx, "mv1", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.TryLockMigration(ctx, "mv1")
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.Holder != "driver-a" {
		t.Fatalf("TryLock while held = %v, want ErrLocked held by driver-a", err)
	}
	if !strings.Contains(err.Error(), "driver-a") {
		t.Errorf("message does not name the holder: %v", err)
	}
	// Another migration's lock is independent.
	lo, err := b.TryLockMigration(ctx, "mv2")
	if err != nil {
		t.Fatalf("lock of another migration: %v", err)
	}
	lo.Unlock(ctx)
	// A guarded write succeeds only while the lock is held.
	resp, err := a.cli.Txn(ctx).If(la.IsOwner()).Then(clientv3.OpPut("/x", "1")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("guarded write while holding: %v %v", resp, err)
	}
	// Lock waits, and gets it once a releases.
	got := make(chan error, 1)
	go func() {
		lb, err := b.LockMigration(ctx, "mv1")
		if err == nil {
			defer lb.Unlock(ctx)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Lock returned while held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.WaitErr(t, got, 5*time.Second, "Lock did not get the released lock")
	resp, _ = a.cli.Txn(ctx).If(la.IsOwner()).Then(clientv3.OpPut("/x", "2")).Commit()
	if resp.Succeeded {
		t.Error("a guarded write succeeded after unlock")
	}
	if _, err := a.LockMigration(ctx, "Bad Id"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad id = %v", err)
	}
}

// A lock held by a process that died (client closed, never unlocked) is released when its
// lease expires, and not before.
func TestLockOfDeadProcessReleasedAfterTTL(t *testing.T) {
	ctx := context.Background()
	alive, dead, dcli := twoProcesses(t, "survivor", "doomed")
	const ttl = 3
	if _, err := dead.LockMigration(ctx, "mv1", WithTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	if _, err := alive.TryLockMigration(ctx, "mv1"); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock = %v, want ErrLocked", err)
	}
	died := time.Now()
	dcli.Close() // the process dies: no unlock, no lease revoke; keep-alives stop
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	l, err := alive.LockMigration(lctx, "mv1", WithTTL(ttl))
	if err != nil {
		t.Fatalf("lock after the holder died: %v", err)
	}
	defer l.Unlock(ctx)
	waited := time.Since(died)
	t.Logf("lock of the dead process released after %v (TTL %ds)", waited.Round(10*time.Millisecond), ttl)
	if waited < time.Second {
		t.Errorf("released after %v: before the lease could expire", waited)
	}
}

func TestCampaign(t *testing.T) {
	ctx := context.Background()
	a, b, bcli := twoProcesses(t, "sched-a", "sched-b")
	la, err := a.Campaign(ctx, "scheduler", WithTTL(3))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := a.LeaderOf(ctx, "scheduler"); err != nil || h != "sched-a" {
		t.Fatalf("LeaderOf = %q, %v", h, err)
	}
	won := make(chan *Leader, 1)
	go func() {
		lb, err := b.Campaign(ctx, "scheduler", WithTTL(3))
		if err != nil {
			t.Error(err)
			close(won)
			return
		}
		won <- lb
	}()
	select {
	case <-won:
		t.Fatal("two leaders at once")
	case <-time.After(300 * time.Millisecond):
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	var lb *Leader
	select {
	case lb = <-won:
	case <-time.After(5 * time.Second):
		t.Fatal("the second campaigner did not win after resign")
	}
	if h, _ := a.LeaderOf(ctx, "scheduler"); h != "sched-b" {
		t.Errorf("leader after resign = %q", h)
	}
	// The leader dies: a new campaigner wins after the TTL.
	_ = lb
	bcli.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	la2, err := a.Campaign(cctx, "scheduler", WithTTL(3))
	if err != nil {
		t.Fatalf("campaign after the leader died: %v", err)
	}
	la2.Resign(ctx)
}

// TestLockLostWhenEtcdIsUnreachable: a driver cut off from etcd cannot learn that its lease
// expired, nor be told; its lock must count as lost on its own clock once the lease may have
// expired (TTL after the last renewal etcd acknowledged), so it stops acting before another
// driver can take over.
func TestLockLostWhenEtcdIsUnreachable(t *testing.T) {
	srv, cli := testenv.Etcd(t)
	s, err := NewStore(cli, "demo")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := s.TryLockMigration(ctx, "mv1", WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err right after locking: %v", err)
	}
	srv.Close() // a graceful stop: it may answer renewals for a while
	cut := time.Now()
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the lock did not count as lost within 10s of losing etcd (TTL 2s)")
	}
	t.Logf("lock counted as lost %v after etcd stopped (TTL 2s)", time.Since(cut).Round(time.Millisecond))
	if err := l.Err(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Err = %v", err)
	}
}
