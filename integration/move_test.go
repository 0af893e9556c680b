package integration

import (
	"context"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
)

// TestMovesUnderLoad: while a writer routes every transaction through the catalog
// resolver and retries on the fence error, a hot tenant is isolated and moved, a range is
// split and its upper part moved, and a whole range moves (then part of it moves back).
// Afterwards every tenant's balance equals its ledger, every acknowledged ledger write is
// present exactly once on the shard that owns it, and every tenant's rows, moved or not,
// are on its owner only, quiet ones exactly as at the start, written ones at the start's
// count plus their acknowledged changes.
func TestMovesUnderLoad(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 3, demo.DataOptions{Tenants: 40, Scale: 0.1, Seed: 7})
	stopLoad := s.runLoad(4, 0, 7)
	time.Sleep(500 * time.Millisecond)

	ex := s.executor(migrate.ExecOptions{CutoverRetries: 3})
	move := func(id string, r catalog.KeyRange, to string) {
		t.Helper()
		if q, all := s.quietIn(r); all > 4 && q == 0 {
			t.Errorf("move %s: none of the %d tenants of %s is quiet: the check could not tell a changed row", id, all, r)
		}
		s.carve(r)
		m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: r, Target: to})
		if err != nil {
			t.Fatalf("move %s %s -> %s: %v", id, r, to, err)
		}
		if m.Phase != catalog.PhaseDone || m.Timings.CutoverWindow <= 0 || m.RowsVerified == 0 && m.RowsCopied > 0 {
			t.Errorf("move %s: %+v", id, m)
		}
		t.Logf("%s: %s -> %s: %d rows copied, %d verified, window %.1fms", id, r, to, m.RowsCopied, m.RowsVerified, m.Timings.CutoverWindow*1000)
	}
	hot := s.tenants[0].ID // the heaviest, busiest tenant, on s1
	move("isolate_hot", catalog.NewRange(hot, hot+1), "s2")

	st, _ := s.store.Load(ctx)
	var s3 catalog.Range
	for _, r := range st.Ranges {
		if r.Shard == "s3" {
			s3 = r
		}
	}
	_, upper, err := s3.Range.Split(s3.Range.Lo + 1<<61) // s3 holds the top third of the key line
	if err != nil {
		t.Fatal(err)
	}
	move("split_upper", upper, "s1")

	st, _ = s.store.Load(ctx)
	var s2 catalog.Range
	for _, r := range st.Ranges {
		if r.Shard == "s2" && !r.Range.Equal(catalog.NewRange(hot, hot+1)) {
			s2 = r
		}
	}
	move("whole_range", s2.Range, "s3")
	move("hot_back", catalog.NewRange(hot, hot+1), "s1") // back to a shard with a tombstone

	time.Sleep(300 * time.Millisecond)
	result := stopLoad()
	if result.Failed > 0 {
		t.Errorf("%d transactions failed: %v", result.Failed, result.Errors)
	}
	if result.Acked < 100 {
		t.Errorf("only %d transactions acknowledged: the load did not run", result.Acked)
	}
	s.check(ctx, result)
}
