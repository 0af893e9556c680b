package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestShardSlotsHoldAcrossDriversAndGoWithTheLock: a shard's move slot is held by one
// claim at a time whichever process asks; a claim is all or none (a busy slot leaves the
// free ones unclaimed) and names the holder; the slots go with the claim's lock, whether it
// is unlocked or its process dies (its lease expires); a lock no longer held claims nothing.
func TestShardSlotsHoldAcrossDriversAndGoWithTheLock(t *testing.T) {
	ctx := context.Background()
	a, b, bcli := twoProcesses(t, "driver-a", "driver-b")
	defer bcli.Close()
	holders := func() map[string]string {
		t.Helper()
		h, err := a.SlotHolders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	la, err := a.TryLockMigration(ctx, "p_1", WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ClaimSlots(ctx, la, "p_1", "s1", "s2"); err != nil {
		t.Fatalf("claim of free slots: %v", err)
	}
	lb, err := b.TryLockMigration(ctx, "p_2", WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	err = b.ClaimSlots(ctx, lb, "p_2", "s3", "s2")
	var busy *SlotBusyError
	if !errors.As(err, &busy) || !errors.Is(err, ErrSlotBusy) || busy.Shard != "s2" || !strings.Contains(busy.Holder, "p_1") || !strings.Contains(busy.Holder, "driver-a") {
		t.Fatalf("claim of s3, s2 while p_1 holds s2 = %v; want ErrSlotBusy naming s2, p_1 and driver-a", err)
	}
	if h := holders(); len(h) != 2 || h["s3"] != "" {
		t.Fatalf("slots after the refused claim: %v; want s1 and s2 only (all or none)", h)
	}

	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if h := holders(); len(h) != 0 {
		t.Fatalf("slots after p_1's lock was released: %v; want none", h)
	}
	if err := b.ClaimSlots(ctx, lb, "p_2", "s3", "s2"); err != nil {
		t.Fatalf("claim once p_1 is gone: %v", err)
	}

	// b's process dies: its lease expires, and the slots with it.
	bcli.Close()
	deadline := time.Now().Add(time.Minute)
	for len(holders()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slots of a dead process still held after a minute: %v", holders())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A lock that is gone claims nothing.
	lc, err := a.TryLockMigration(ctx, "p_3", WithTTL(2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Revoke(ctx, lc.session.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := a.ClaimSlots(ctx, lc, "p_3", "s1"); !errors.Is(err, ErrLockLost) {
		t.Fatalf("claim under a revoked lock = %v; want ErrLockLost", err)
	}
	if h := holders(); len(h) != 0 {
		t.Fatalf("slots after a claim under a revoked lock: %v; want none", h)
	}
}
