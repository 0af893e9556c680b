package migrate

import (
	"context"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/migrate/migratetest"
)

// TestMoveThatEndsDoneKeepsNoCopyPlan: a real move (the real mover, PostgreSQL and etcd)
// has its copy plan in etcd until its cutover, and once it is done none of it is left;
// its record still reports the copy's tables, rows and runs, and every tenant's rows on
// every shard are as they were, on their owner only.
func TestMoveThatEndsDoneKeepsNoCopyPlan(t *testing.T) {
	ctx := context.Background()
	f := newFleet(t, 2)
	sp := split(f.ranges[0], f.cuts(f.ranges[0].Range, 2)...)
	p := f.plan("pend", sp, move(sp.Parts[0], "s1", "s2"))
	atCutover := -1
	ex := f.executor(ExecOptions{BeforeCutover: func() { atCutover = migratetest.PlanPages(t, ctx, f.store, "pend_2") }})
	if _, err := ex.ApplyPlan(ctx, p, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st := f.check(ctx)
	if atCutover <= 0 {
		t.Fatalf("%d pages of the copy plan at the cutover, want the plan there", atCutover)
	}
	if n := migratetest.PlanPages(t, ctx, f.store, "pend_2"); n != 0 {
		t.Fatalf("%d keys under copyplans/pend_2/ once the move is done (%d at its cutover), want none", n, atCutover)
	}
	m := st.Migrations["pend_2"]
	chunks := 0
	for _, tp := range m.Tables {
		chunks += tp.ChunksTotal
	}
	if m.Phase != catalog.PhaseDone || m.RowsCopied == 0 || chunks == 0 || m.Copy == nil || m.Copy.Runs != 1 || len(m.Copy.Tables) != len(m.Tables) {
		t.Errorf("the done move's record: %s, %d rows, %d chunks, copy %+v; want done with its totals", m.Phase, m.RowsCopied, chunks, m.Copy)
	}
}
