package migratetest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// Catalog fails t unless the catalog is valid and every range serves (no migration is
// left half-way); it returns the state it read.
func Catalog(t testing.TB, ctx context.Context, store *catalog.Store) *catalog.State {
	t.Helper()
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := catalog.ValidateState(st); err != nil {
		t.Fatalf("catalog: %v", err)
	}
	for _, r := range st.Ranges {
		if r.State != catalog.RangeServing {
			t.Errorf("range %s is %s", r.Range, r.State)
		}
	}
	return st
}

// NoReplicationLeft fails t for each shard that keeps a reshard replication slot or
// publication: a finished or rolled-back migration drops both.
func NoReplicationLeft(t testing.TB, ctx context.Context, conns map[string]*pgx.Conn) {
	t.Helper()
	for name, c := range conns {
		var slots, pubs int
		if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'reshard%'),
			(SELECT count(*) FROM pg_publication WHERE pubname LIKE 'reshard%')`).Scan(&slots, &pubs); err != nil {
			t.Fatal(err)
		}
		if slots+pubs != 0 {
			t.Errorf("shard %s: %d reshard slots and %d publications left", name, slots, pubs)
		}
	}
}

// Queriers is conns as the demo's checks take them.
func Queriers(conns map[string]*pgx.Conn) map[string]demo.Querier {
	qs := make(map[string]demo.Querier, len(conns))
	for name, c := range conns {
		qs[name] = c
	}
	return qs
}

// PlanPages is how many keys of migration id's copy plan (copyplans/<id>/) the catalog
// holds, read through its export.
func PlanPages(t testing.TB, ctx context.Context, store *catalog.Store, id string) int {
	t.Helper()
	b, err := store.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ex catalog.Export
	if err := json.Unmarshal(b, &ex); err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range ex.Keys {
		if strings.HasPrefix(k, "copyplans/"+id+"/") {
			n++
		}
	}
	return n
}
