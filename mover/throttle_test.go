package mover

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestCopyPausesForSourceLag: the copy waits while another slot on the source retains more
// WAL than MaxSourceLag, and goes on once it no longer does.
func TestCopyPausesForSourceLag(t *testing.T) {
	smallChunks(t)
	ctx := context.Background()
	rng := catalog.NewRange(2, 5)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 6, 5, 2000, 40)
	// A standby's slot that does not move, and 4 MB of WAL behind it.
	mustExec(t, ctx, src, `SELECT pg_create_physical_replication_slot('laggy', true)`)
	mustExec(t, ctx, src, `CREATE TABLE scratch AS SELECT g, md5(g::text) AS h FROM generate_series(1, 60000) g; DROP TABLE scratch`)

	var copied atomic.Int64
	cfg := moveConfig(t, "lag", srcPG, dstPG, testTables, rng)
	cfg.Workers, cfg.MaxSourceLag, cfg.MaxRate = 2, 1<<20, 512<<10
	cfg.Progress = func(p Progress) { copied.Store(p.BytesCopied) }
	m, err := New(cfg, newMemJournal())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- m.Start(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for !m.th.paused.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the copy never paused for the lagging slot")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // writes in flight land
	before := copied.Load()
	time.Sleep(1500 * time.Millisecond)
	if after := copied.Load(); after != before {
		t.Fatalf("the copy went on while paused: %d -> %d bytes", before, after)
	}
	select {
	case err := <-started:
		t.Fatalf("Start returned while paused: %v", err)
	default:
	}
	mustExec(t, ctx, src, `SELECT pg_drop_replication_slot('laggy')`)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	t.Logf("paused at %d bytes, then finished", before)
	waitCaughtUp(t, ctx, m, src)
	assertSame(t, ctx, src, dst, testTables, rng)
	if err := m.DropReplication(ctx); err != nil {
		t.Fatal(err)
	}
}
