package mover

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestInvalidatedSlotStopsTheCatchUpWithWhatToDo holds the catch-up's apply on a lock on
// the target while the source writes and switches WAL past a tiny max_slot_wal_keep_size
// and checkpoints: the source invalidates the slot (wal_status lost) and the catch-up stops
// with one line that says so and says to cancel the migration and move again; a new mover
// refuses to resume it the same way.
func TestInvalidatedSlotStopsTheCatchUpWithWhatToDo(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, schema)
	seed(t, ctx, src, 6, 3, 50, 5)
	rng := catalog.NewRange(1, 3)
	srcPG.Exec(ctx, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	srcPG.Exec(ctx, "SELECT pg_reload_conf()")

	j := newMemJournal()
	cfg := moveConfig(t, "slot_lost", srcPG, dstPG, testTables, rng)
	m := startMover(t, ctx, cfg, j)
	defer m.Stop(ctx)
	waitCaughtUp(t, ctx, m, src)

	// The apply waits on this lock, so the slot keeps the WAL from here on.
	hold, err := dst.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	mustExec(t, ctx, hold, "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
	mustExec(t, ctx, src, "INSERT INTO accounts (tenant_id, id, name) VALUES (1, 500, 'held')")
	for range 4 {
		mustExec(t, ctx, src, "INSERT INTO docs (tenant_id, id, title, body) SELECT 5, nextval('ids'), 'wal', repeat('x', 2000) FROM generate_series(1, 200)")
		mustExec(t, ctx, src, "SELECT pg_switch_wal()")
	}
	mustExec(t, ctx, src, "CHECKPOINT")
	var status string
	if err := src.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'reshard_slot_lost'").Scan(&status); err != nil {
		t.Fatal(err)
	}
	if status != "lost" {
		t.Fatalf("the slot's wal_status is %q after the checkpoint, want lost", status)
	}

	_ = hold.Rollback(ctx)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = m.WaitApplied(wctx, currentLSN(t, ctx, src))
	cancel()
	wantLine(t, "the catch-up", err, "reshard_slot_lost", "invalidated", "max_slot_wal_keep_size", "reshard cancel slot_lost", "move again")

	// A new driver of the migration gets the same answer.
	m2, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	wantLine(t, "a resume", m2.Start(ctx), "reshard_slot_lost", "invalidated", "max_slot_wal_keep_size", "reshard cancel slot_lost", "move again")
	if rec := j.get(t, cfg.ID); !strings.Contains(rec.LastError, "invalidated") {
		t.Errorf("the journal's last error is %q", rec.LastError)
	}
}

// wantLine checks that err is ErrSlotInvalidated, one line, naming every one of want.
func wantLine(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, ErrSlotInvalidated) {
		t.Fatalf("%s: %v, want ErrSlotInvalidated", what, err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: the error is more than one line: %q", what, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the error lacks %q: %v", what, w, err)
		}
	}
	t.Logf("%s: %v", what, err)
}
