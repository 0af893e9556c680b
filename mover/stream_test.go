package mover

import (
	"context"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestMessageOnlyTransactionsWriteNothingOnTarget: the stream asks for logical messages (a
// partition's TRUNCATE notice comes as one), so source transactions holding only a message
// (the cutover's fence marker, WaitApplied's nudge) arrive as transactions. They move the
// applied position without a target transaction: the cutover waits for no commit there.
func TestMessageOnlyTransactionsWriteNothingOnTarget(t *testing.T) {
	ctx := context.Background()
	rng := catalog.NewRange(2, 4)
	srcPG, dstPG, src, dst := seededPair(t, ctx, rng, 4, 2, 20, 2)
	m := startMover(t, ctx, moveConfig(t, "msgs", srcPG, dstPG, testTables, rng), newMemJournal())
	defer m.Stop(ctx)
	mustExec(t, ctx, src, `UPDATE accounts SET name = 'x' WHERE tenant_id = 3`)
	waitCaughtUp(t, ctx, m, src)
	progress := func() string {
		var s string
		if err := dst.QueryRow(ctx, `SELECT lsn::text FROM reshard.progress WHERE migration = 'msgs'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := progress()
	for range 3 {
		mustExec(t, ctx, src, `BEGIN; SELECT pg_logical_emit_message(true, 'reshard', 'fence'); COMMIT`)
	}
	lsn := currentLSN(t, ctx, src)
	waitCaughtUp(t, ctx, m, src)
	if m.AppliedLSN() < lsn {
		t.Fatalf("applied %s, want at least %s", m.AppliedLSN(), lsn)
	}
	if after := progress(); after != before {
		t.Errorf("message-only source transactions made target transactions: reshard.progress %s -> %s", before, after)
	}
	assertSame(t, ctx, src, dst, testTables, rng)
}
