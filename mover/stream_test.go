package mover

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

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

// TestReceiverReadsOnWhileTheApplierIsBusy: while the applier is in a round trip to the
// target, handing segments off does not wait for it (the receiver reads on, so the source's
// WAL sender never waits for the target); what was kept meanwhile goes over in one piece,
// in order, once the applier takes it. Past queueBytes the receiver waits.
func TestReceiverReadsOnWhileTheApplierIsBusy(t *testing.T) {
	out := make(chan []segment, 1)
	r := &receiver{out: out}
	out <- []segment{{commit: true, endLSN: 1}} // the applier is busy with this one
	// Less than the status interval: the old receiver waited for the applier and reported
	// status meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	for lsn := pglogrepl.LSN(2); lsn <= 4; lsn++ {
		r.queue(segment{begin: true, commit: true, endLSN: lsn, size: 100})
		if err := r.handOff(ctx); err != nil {
			t.Fatalf("handing off transaction %d waited for the busy applier: %v", lsn, err)
		}
	}
	<-out // the applier takes the first; the rest go over together
	if err := r.handOff(ctx); err != nil {
		t.Fatal(err)
	}
	var got []pglogrepl.LSN
	for _, s := range <-out {
		got = append(got, s.endLSN)
	}
	if fmt.Sprint(got) != "[0/2 0/3 0/4]" {
		t.Fatalf("handed off %v, want 0/2 0/3 0/4 in one piece", got)
	}
	// Past queueBytes the receiver waits for the applier (here until its context ends).
	out <- []segment{{commit: true, endLSN: 5}}
	r.queue(segment{begin: true, commit: true, endLSN: 6, size: queueBytes})
	stopped, stop := context.WithCancel(context.Background())
	stop()
	if err := r.handOff(stopped); !errors.Is(err, context.Canceled) || len(r.pending) != 1 {
		t.Fatalf("past queueBytes with the applier busy: handOff returned %v with %d segments pending, want it to wait", err, len(r.pending))
	}
}
