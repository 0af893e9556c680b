package integration

import (
	"context"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// TestKilledCopyResumesWithUnfinishedChunks kills `reshard move` with SIGKILL once about
// half of the copy of a 220k-row tenant is done, under a live load that writes into it; the
// re-run copies only the chunks the journal does not call done (under 60% of the range's
// rows, from a new snapshot) and catches up from the slot's original consistent point. At
// the end every tenant's rows on every shard are as they should be.
func TestKilledCopyResumesWithUnfinishedChunks(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.2, Seed: 13})
	big := s.tenants[0].ID
	r := catalog.NewRange(big, big+1)
	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	from, _ := st.Owner(big)
	to := map[string]string{"s1": "s2", "s2": "s1"}[from.Shard]
	// The big tenant grows by 220k orders, and a neighbour on its shard by more, so that
	// the range is under half of the table and its copy is cut into key chunks.
	var neighbour int64
	found := false
	for _, tn := range s.tenants[1:] {
		if o, _ := st.Owner(tn.ID); o.Shard == from.Shard && !found {
			neighbour, found = tn.ID, true
		}
	}
	if !found {
		t.Fatal("no neighbour of the big tenant on its shard")
	}
	src := s.conns[from.Shard]
	for _, g := range []struct {
		tenant int64
		rows   int
	}{{big, 220_000}, {neighbour, 240_000}} {
		if _, err := src.Exec(ctx, `INSERT INTO orders (tenant_id, status, total, created_at)
			SELECT $1, 'bulk', (i % 100000) / 100.0, now() - (i % 1000) * interval '1 minute' FROM generate_series(1, $2::int) i`, g.tenant, g.rows); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Exec(ctx, "ANALYZE orders"); err != nil {
		t.Fatal(err)
	}
	if s.before, err = demo.TakeSnapshot(ctx, s.queriers(), demo.Tables); err != nil {
		t.Fatal(err)
	}
	var rangeRows int64
	if err := src.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenants WHERE tenant_id = $1) + (SELECT count(*) FROM orders WHERE tenant_id = $1)
		+ (SELECT count(*) FROM order_items WHERE tenant_id = $1) + (SELECT count(*) FROM ledger WHERE tenant_id = $1)
		+ (SELECT count(*) FROM events WHERE tenant_id = $1)`, big).Scan(&rangeRows); err != nil {
		t.Fatal(err)
	}
	stop := s.runLoad(3, 200, 17)

	d := s.startMove(t, "resume_copy", r, to, "", "", "--max-rate", "8000000")
	runs := 0
	for deadline := time.Now().Add(3 * time.Minute); runs == 0; time.Sleep(5 * time.Millisecond) {
		m, err := s.store.GetMigration(ctx, "resume_copy")
		if err == nil && m.Phase == catalog.PhaseCopying && 2*copiedRows(m.Copy, 0) >= rangeRows {
			if err := d.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			runs = m.Copy.Runs
			t.Logf("killed with %d of %d rows copied", copiedRows(m.Copy, 0), rangeRows)
		}
		select {
		case err := <-d.done:
			t.Fatalf("move ended before half its copy was seen done: %v\n%s", err, d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("half the copy was never seen done:\n%s", d.log())
		}
	}
	<-d.done
	m := s.finishMove(t, "resume_copy", r, to)
	again := copiedRows(m.Copy, runs)
	if m.Copy.Runs <= runs || float64(again) >= 0.6*float64(rangeRows) {
		t.Errorf("after the kill the copy ran %d more times and copied %d of the range's %d rows, want under 60%%", m.Copy.Runs-runs, again, rangeRows)
	}
	t.Logf("the re-run copied %d of the range's %d rows", again, rangeRows)
	res := stop()
	s.check(ctx, res)
}

// copiedRows sums the rows of the chunks done by runs after the given one.
func copiedRows(p *catalog.CopyPlan, after int) int64 {
	var n int64
	if p == nil {
		return 0
	}
	for _, tb := range p.Tables {
		for _, c := range tb.Chunks {
			if c.Done && c.Run > after {
				n += c.Rows
			}
		}
	}
	return n
}
