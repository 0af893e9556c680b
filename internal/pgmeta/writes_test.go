package pgmeta

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

func TestSampleWrites(t *testing.T) {
	pg, conn := shardWith(t, schema+`
INSERT INTO orders SELECT g % 10, g, 'x' FROM generate_series(1, 1000) g`)
	ctx := context.Background()
	pool := pg.Pool(ctx)

	// A writer hammers tenant 7 (inserts, updates, deletes, and a partitioned table);
	// tenant 3 gets a trickle.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var hot, cold atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := int64(100000); wctx.Err() == nil; i++ {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO orders VALUES (7, $1, 'hot')`, i)
			b.Queue(`UPDATE orders SET note = 'it''s hot' WHERE tenant_id = 7 AND id = $1`, i)
			b.Queue(`INSERT INTO events VALUES (7, $1, '2025-06-01')`, i)
			b.Queue(`DELETE FROM orders WHERE tenant_id = 7 AND id = $1`, i)
			if err := pool.SendBatch(wctx, b).Close(); err != nil {
				return
			}
			hot.Add(4)
		}
	}()
	go func() {
		defer wg.Done()
		for i := int64(200000); wctx.Err() == nil; i++ {
			if _, err := pool.Exec(wctx, `INSERT INTO orders VALUES (3, $1, 'cold')`, i); err != nil {
				return
			}
			cold.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	before := hot.Load()
	ws, err := SampleWrites(ctx, conn, catalog.RangeOn("tenant_id"), []string{"orders", "events"}, 2*time.Second)
	after := hot.Load()
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sampled %v: tenant 7 %d writes (writer made %d..%d meanwhile), tenant 3 %d", ws.Elapsed.Round(time.Millisecond), ws.Writes[7], after-before-4, after-before+4, ws.Writes[3])
	if ws.Writes[7] == 0 || ws.Writes[7] > after-before+8 || ws.Writes[7] < (after-before)/2 {
		t.Errorf("tenant 7: %d writes sampled, writer made about %d", ws.Writes[7], after-before)
	}
	if ws.Writes[3] == 0 || ws.Writes[3] >= ws.Writes[7] {
		t.Errorf("tenant 3: %d writes", ws.Writes[3])
	}
	if len(ws.Writes) != 2 {
		t.Errorf("writes for %d tenants, want 2: %v", len(ws.Writes), ws.Writes)
	}
	assertNoSlots(t, ctx, pg.DSNApp())
}

func TestSampleWritesCancelDropsSlot(t *testing.T) {
	pg, conn := shardWith(t, schema)
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	_, err := SampleWrites(cctx, conn, catalog.RangeOn("tenant_id"), []string{"orders"}, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SampleWrites = %v, want deadline exceeded", err)
	}
	assertNoSlots(t, ctx, pg.DSNApp())
	// Unknown table: an error, and no slot left.
	if _, err := SampleWrites(ctx, conn, catalog.RangeOn("tenant_id"), []string{"nosuch"}, time.Second); err == nil {
		t.Error("unknown table accepted")
	}
	assertNoSlots(t, ctx, pg.DSNApp())
}

func assertNoSlots(t *testing.T, ctx context.Context, dsn string) {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	for i := 0; i < 50; i++ {
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'reshard_stats_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%d reshard_stats_ slots left behind", n)
}

func TestKeyValue(t *testing.T) {
	tests := []struct {
		tuple, key string
		want       string
		ok         bool
	}{
		{`id[bigint]:1 tenant_id[bigint]:42 note[text]:'x'`, "tenant_id", "42", true},
		{`note[text]:'it''s tenant_id[bigint]:9 here' tenant_id[bigint]:-5`, "tenant_id", "-5", true},
		{`created[timestamp with time zone]:'2026-01-01 00:00:00+00' tenant_id[bigint]:7`, "tenant_id", "7", true},
		{`tags[text[]]:'{a,b}' tenant_id[bigint]:8`, "tenant_id", "8", true},
		{`tenant_id[bigint]:null id[bigint]:1`, "tenant_id", "", false},
		{`id[bigint]:1`, "tenant_id", "", false},
		{`(no-tuple-data)`, "tenant_id", "", false},
		{`slug[text]:'o''brien x' id[bigint]:1`, "slug", "o'brien x", true},
		{`slug[text]:'null'`, "slug", "null", true},
		{`"Company"[uuid]:'0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d'`, "Company", "0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d", true},
	}
	for _, tt := range tests {
		got, ok := keyValue(tt.tuple, tt.key)
		if got != tt.want || ok != tt.ok {
			t.Errorf("keyValue(%q, %q) = %q, %v; want %q, %v", tt.tuple, tt.key, got, ok, tt.want, tt.ok)
		}
	}
	p := &changeParser{keys: catalog.RangeOn("tenant_id"), roots: map[string]string{"public.orders": "orders"}, writes: map[int64]int64{}}
	for _, l := range []string{
		"BEGIN",
		"table public.orders: INSERT: tenant_id[bigint]:1 id[bigint]:1",
		"table public.orders: UPDATE: old-key: tenant_id[bigint]:1 id[bigint]:1 new-tuple: tenant_id[bigint]:2 id[bigint]:1",
		"table public.orders: DELETE: tenant_id[bigint]:2 id[bigint]:1",
		"table public.orders: TRUNCATE: (no-flags)",
		"table public.other: INSERT: tenant_id[bigint]:3",
		"COMMIT",
	} {
		p.line(l)
	}
	if p.writes[1] != 1 || p.writes[2] != 2 || len(p.writes) != 2 || p.unknown["public.other"][3] != 1 {
		t.Errorf("parser: writes %v unknown %v", p.writes, p.unknown)
	}
}

// TestChangeParserNamesHashedTenants: under hash distribution a sampled write is counted at
// its tenant's hash and the tenant named by its key in PostgreSQL's text form; under range
// no names are kept.
func TestChangeParserNamesHashedTenants(t *testing.T) {
	const u = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d"
	key, err := catalog.ParseKey(catalog.KeyUUID, u)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		keys  catalog.Keyspace
		line  string
		at    int64
		names map[int64]string
	}{
		{"hash uuid", catalog.Keyspace{Key: "org_id", Type: catalog.KeyUUID, Distribution: catalog.DistHash},
			"table public.orgs: INSERT: org_id[uuid]:'" + u + "' n[bigint]:1", catalog.HashKey(key), map[int64]string{catalog.HashKey(key): u}},
		{"range bigint", catalog.RangeOn("tenant_id"), "table public.orgs: INSERT: tenant_id[bigint]:7 n[bigint]:1", 7, map[int64]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newChangeParser(tc.keys, map[string]string{"public.orgs": "orgs"}, map[int64]int64{})
			p.line(tc.line)
			if p.writes[tc.at] != 1 || fmt.Sprint(p.names) != fmt.Sprint(tc.names) {
				t.Errorf("writes %v names %v; want one write at %d, names %v", p.writes, p.names, tc.at, tc.names)
			}
		})
	}
}
