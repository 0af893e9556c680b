package migrate

import (
	"context"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestJournalUnknownOutcome: a checkpoint whose context ends may still commit, even after
// the next checkpoint has read the revision again (it was in flight); that checkpoint must
// not then fail on a stale revision: with the migration lock guarding every write, a
// conflict can only be the journal's own late write. (Seen under load: "mover: save
// migration second: ... was changed by another driver".)
func TestJournalUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	_, cli := testenv.Etcd(t)
	store, err := catalog.NewStore(cli, "j")
	if err != nil {
		t.Fatal(err)
	}
	cfg := catalog.Config{Cluster: "j", Key: "tenant_id", Tables: []string{"t"}}
	if err := store.Init(ctx, cfg, []catalog.Shard{{Name: "s1", DSN: "host=x"}, {Name: "s2", DSN: "host=y"}}, nil, false); err != nil {
		t.Fatal(err)
	}
	m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: catalog.Full, Source: "s1", Target: "s2", Phase: catalog.PhasePlanned}
	if err := store.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	j := NewJournal(store, m)
	rec, _ := j.Load(ctx, "m1")
	rec.Phase = catalog.PhaseCopying
	// Simulate a write that committed although its caller saw an error: write behind the
	// journal's back, then make the journal's own write fail.
	behind := *rec
	behind.ModRev = m.ModRev
	if err := store.PutMigration(ctx, &behind); err != nil {
		t.Fatal(err)
	}
	rec.RowsCopied = 41
	if err := j.Save(ctx, rec); err != nil {
		t.Fatalf("a save over the journal's own late write must read the revision again: %v", err)
	}
	if got, _ := store.GetMigration(ctx, "m1"); got.RowsCopied != 41 {
		t.Fatalf("stored %+v", got)
	}
	late, _ := store.GetMigration(ctx, "m1")
	late.RowsCopied = 7
	if err := store.PutMigration(ctx, late); err != nil {
		t.Fatal(err)
	}
	rec.RowsCopied = 42
	if err := j.Save(ctx, rec); err != nil {
		t.Fatalf("the save after a late write must reload the revision: %v", err)
	}
	got, _ := store.GetMigration(ctx, "m1")
	if got.RowsCopied != 42 {
		t.Fatalf("stored %+v", got)
	}
}
