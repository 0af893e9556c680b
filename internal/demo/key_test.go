package demo

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestUUIDTenantsArePlacedByTheirHash: uuid tenants are version-4 uuids, the same for the
// same seed, placed on the key line by PostgreSQL's uuid_hash_extended (the hot ones
// inside HotRange), ordered by it for QuietTenants, and written to JSON (map keys too) in
// PostgreSQL's text form and read back.
func TestUUIDTenantsArePlacedByTheirHash(t *testing.T) {
	hot := catalog.NewRange(-1<<62, 0)
	opts := DataOptions{Tenants: 50, Seed: 3, HotRange: hot}
	a, err := GenerateTenantsOf[UUID](opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateTenantsOf[UUID](opts)
	for i, tn := range a {
		if tn.ID != b[i].ID {
			t.Fatalf("tenant %d: %v, then %v: not deterministic", i, tn.ID, b[i].ID)
		}
		k, err := catalog.ParseKey(catalog.KeyUUID, tn.ID.String())
		if err != nil || tn.ID.String()[14] != '4' {
			t.Fatalf("tenant %v: not a version-4 uuid: %v", tn.ID, err)
		}
		if Position(tn.ID) != catalog.HashKey(k) {
			t.Errorf("tenant %v: position %d, hash %d", tn.ID, Position(tn.ID), catalog.HashKey(k))
		}
		if tn.Rank <= DefaultHot && !hot.Contains(Position(tn.ID)) {
			t.Errorf("hot tenant %v hashes to %d, outside %s", tn.ID, Position(tn.ID), hot)
		}
	}
	quiet := QuietTenants(a, 3, DefaultHot)
	if len(quiet) < 10 {
		t.Errorf("%d quiet tenants of 50, want every third", len(quiet))
	}
	ch := NewChangesOf[UUID]()
	ch.note(a[0].ID, Counts{"orders": 2}, false)
	rec := NewLoadRecord(1, time.Now(), quiet)
	rec.Changes = ch
	js, err := json.Marshal(rec)
	if err != nil || !strings.Contains(string(js), `"`+a[0].ID.String()+`":{"orders":2}`) {
		t.Fatalf("JSON %s, %v", js, err)
	}
	var back LoadRecordOf[UUID]
	if err := json.Unmarshal(js, &back); err != nil || back.Changes.Rows[a[0].ID]["orders"] != 2 || len(back.Quiet) != len(quiet) {
		t.Fatalf("read back %+v, %v", back, err)
	}
	for i := 1; i < len(back.Quiet); i++ {
		if Position(back.Quiet[i-1]) > Position(back.Quiet[i]) {
			t.Errorf("quiet tenants not in key line order: %v", back.Quiet)
		}
	}
}

// TestUUIDDemoLoadsAndChecksEveryTenant: the demo with uuid tenant ids on two real shards
// (the hash line split evenly): each shard holds the tenants whose hash its range holds, a
// load routed by hash keeps balance = sum(ledger), and CheckStack finds every tenant's rows
// as they should be, then names a tenant whose row is copied onto the shard that does not
// own it.
func TestUUIDDemoLoadsAndChecksEveryTenant(t *testing.T) {
	ctx := context.Background()
	s := newStackOf[UUID](t, DataOptions{Tenants: 30, Scale: 0.02, Seed: 5})
	ranges, tenants, placed, qs, dsns := s.ranges, s.tenants, s.placed, s.db, s.dsn
	var onS1 int64
	if err := s.pool["s1"].QueryRow(ctx, `SELECT count(*) FROM tenants WHERE uuid_hash_extended(tenant_id, 0) < 0`).Scan(&onS1); err != nil || onS1 != int64(len(placed["s1"])) {
		t.Fatalf("s1 holds %d tenants hashing below 0 (%v), want all its %d", onS1, err, len(placed["s1"]))
	}
	var err error
	base := BaselineOf[UUID]{Taken: time.Now(), Tables: Tables}
	if base.Snapshot, err = TakeSnapshotOf[UUID](ctx, qs, Tables); err != nil {
		t.Fatal(err)
	}
	router, err := NewStaticRouterOf[UUID](ranges, dsns)
	if err != nil {
		t.Fatal(err)
	}
	quiet := QuietTenants(tenants, 3, DefaultHot)
	res, err := Load(ctx, LoadOptionsOf[UUID]{Tenants: tenants, Router: router, Workers: 2, Duration: 2 * time.Second, Quiet: quiet})
	if err != nil || res.Acked == 0 || res.Failed != 0 {
		t.Fatalf("load: %+v, %v", res, err)
	}
	rec := NewLoadRecord(1, time.Now(), quiet)
	rec.Finish(res, time.Now())
	st := catalog.State{Ranges: ranges}
	owner := func(k UUID) string { r, _ := st.Owner(Position(k)); return r.Shard }
	rep, err := CheckStack(ctx, qs, owner, &base, []LoadRecordOf[UUID]{*rec})
	if err != nil || rep.LedgerRows == 0 || rep.Tenants.Shards[0].Exact == 0 {
		t.Fatalf("check: %+v, %v", rep, err)
	}
	stray := placed["s2"][0].ID
	if _, err := s.pool["s1"].Exec(ctx, `INSERT INTO tenants (tenant_id, name, plan) VALUES ('`+stray.String()+`', 'stray', 'starter')`); err != nil {
		t.Fatal(err)
	}
	_, err = CheckStack(ctx, qs, owner, &base, []LoadRecordOf[UUID]{*rec})
	if err == nil || !strings.Contains(err.Error(), "tenant "+stray.String()) || !strings.Contains(err.Error(), "s1 does not own it (owner s2)") {
		t.Fatalf("a stray row on s1: %v", err)
	}
}
