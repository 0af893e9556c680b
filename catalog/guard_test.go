package catalog

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestGuardedWritesNeedTheLock: a driver's journal and catalog writes are conditional on
// holding the migration's lock. Once its lease is gone (here revoked, as expiry would),
// every guarded write fails with ErrLockLost and changes nothing, the lock reports the
// loss, and the driver's context ends with it as the cause.
func TestGuardedWritesNeedTheLock(t *testing.T) {
	s, cli, st, m := demoMove(t)
	ctx := context.Background()
	l, err := s.TryLockMigration(ctx, "mv1", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	held := HeldBy(l)
	if l.Token() <= 0 {
		t.Fatalf("token %d", l.Token())
	}
	m.Phase = PhaseCopying
	if err := s.PutMigration(ctx, m, held); err != nil {
		t.Fatalf("guarded write while holding the lock: %v", err)
	}
	dctx, cancel := l.Context(ctx)
	defer cancel()

	if _, err := cli.Revoke(ctx, l.session.Lease()); err != nil {
		t.Fatal(err)
	}
	rev := m.ModRev
	m.Phase = PhaseCatchingUp
	if err := s.PutMigration(ctx, m, held); !errors.Is(err, ErrLockLost) {
		t.Fatalf("guarded write after the lease was revoked = %v, want ErrLockLost", err)
	}
	st, _ = s.Load(ctx)
	if err := s.Freeze(ctx, st, st.Ranges[1].Range.Lo, m, held); !errors.Is(err, ErrLockLost) {
		t.Fatalf("guarded freeze = %v, want ErrLockLost", err)
	}
	got, err := s.GetMigration(ctx, "mv1")
	if err != nil || got.ModRev != rev || got.Phase != PhaseCopying {
		t.Fatalf("journal changed by a driver without the lock: %+v, %v", got, err)
	}
	if st2, _ := s.Load(ctx); st2.Ranges[1].State != RangeServing {
		t.Fatalf("range frozen by a driver without the lock")
	}
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost not closed")
	}
	if err := l.Err(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Err = %v", err)
	}
	select {
	case <-dctx.Done():
		if !errors.Is(context.Cause(dctx), ErrLockLost) {
			t.Errorf("driver context cause = %v", context.Cause(dctx))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the driver's context did not end")
	}
	// Whoever takes the lock next has a greater token and may write.
	l2, err := s.TryLockMigration(ctx, "mv1", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Unlock(ctx)
	if l2.Token() <= l.Token() {
		t.Errorf("tokens %d then %d: must grow", l.Token(), l2.Token())
	}
	m.ModRev = rev
	if err := s.PutMigration(ctx, m, HeldBy(l2)); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
}
