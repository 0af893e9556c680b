package pgmeta

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/testenv"
)

const schema = `
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text);
CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text, PRIMARY KEY (tenant_id, id));
CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL, PRIMARY KEY (tenant_id, id, created))
  PARTITION BY RANGE (created);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2030-01-01') TO ('2040-01-01');
-- broken ones
CREATE TABLE nokey (id bigint PRIMARY KEY);
CREATE TABLE intkey (tenant_id int NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));
CREATE TABLE nopk (tenant_id bigint NOT NULL, id bigint);
CREATE TABLE pkwithoutkey (id bigint PRIMARY KEY, tenant_id bigint);
CREATE TABLE ridx (id bigint PRIMARY KEY, tenant_id bigint NOT NULL);
CREATE UNIQUE INDEX ridx_key ON ridx (tenant_id, id);
CREATE TABLE rinothing (tenant_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id));
ALTER TABLE rinothing REPLICA IDENTITY NOTHING;
CREATE TABLE rifull (tenant_id bigint, id bigint PRIMARY KEY);
ALTER TABLE rifull REPLICA IDENTITY FULL;
CREATE TABLE badpart (tenant_id bigint NOT NULL, id bigint NOT NULL, created date NOT NULL, PRIMARY KEY (tenant_id, id, created))
  PARTITION BY RANGE (created);
CREATE TABLE badpart_p1 PARTITION OF badpart FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
ALTER TABLE badpart_p1 REPLICA IDENTITY NOTHING;
`

func TestCheckShard(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, schema)
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	problems, err := CheckShard(ctx, conn, "tenant_id", []string{"tenants", "orders", "events", "rifull"})
	if err != nil || len(problems) != 0 {
		t.Fatalf("good tables: %v %v", problems, err)
	}
	tests := []struct {
		table string
		want  []string // substrings of the one problem; nil: none
	}{
		{"missing", []string{"does not exist"}},
		{"nokey", []string{"has no column tenant_id"}},
		{"intkey", []string{"is integer, not bigint", "ALTER COLUMN tenant_id TYPE bigint"}},
		{"nopk", []string{"no primary key", "ADD PRIMARY KEY (tenant_id, id)"}},
		{"pkwithoutkey", []string{"primary key pkwithoutkey_pkey (id), which does not include tenant_id", "ALTER COLUMN tenant_id SET NOT NULL", "REPLICA IDENTITY USING INDEX pkwithoutkey_tenant_id_ri"}},
		{"ridx", []string{"does not include tenant_id", "ALTER TABLE public.ridx REPLICA IDENTITY USING INDEX ridx_key"}},
		{"rinothing", []string{"REPLICA IDENTITY NOTHING", "USING INDEX"}},
		{"badpart", []string{"partition public.badpart_p1 of badpart", "REPLICA IDENTITY NOTHING"}},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			ps, err := CheckTable(ctx, conn, "tenant_id", tt.table)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(ps, "\n")
			if len(ps) == 0 {
				t.Fatalf("no problem found, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems %q lack %q", all, w)
				}
			}
		})
	}
	// The suggested fix really works.
	if _, err := conn.Exec(ctx, "ALTER TABLE public.ridx REPLICA IDENTITY USING INDEX ridx_key"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := CheckTable(ctx, conn, "tenant_id", "ridx"); len(ps) != 0 {
		t.Errorf("after the fix: %v", ps)
	}
}

func TestWalLevelNotLogical(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, "ALTER SYSTEM SET wal_level = replica")
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pg.Exec(ctx, "CREATE TABLE t (tenant_id bigint, id bigint, PRIMARY KEY (tenant_id, id))")
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ps, err := CheckShard(ctx, conn, "tenant_id", []string{"t"})
	if err != nil || len(ps) != 1 || !strings.Contains(ps[0], "wal_level is replica, not logical") {
		t.Fatalf("CheckShard = %v, %v", ps, err)
	}
	_, err = SampleWrites(ctx, conn, "tenant_id", []string{"t"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "wal_level") {
		t.Errorf("SampleWrites without logical WAL = %v", err)
	}
}

func TestConnectMasksPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	ctx := context.Background()
	for _, dsn := range []string{
		fmt.Sprintf("host=127.0.0.1 port=%d user=app password=hunter2 dbname=app connect_timeout=2", port),
		fmt.Sprintf("postgres://app:hunter2@127.0.0.1:%d/app?connect_timeout=2", port),
		"host=127.0.0.1 port=notaport password=hunter2",
	} {
		_, err := Connect(ctx, dsn)
		if err == nil {
			t.Fatalf("Connect(%s) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("password in error: %v", err)
		}
		if !strings.Contains(err.Error(), "****") {
			t.Errorf("error does not show the masked DSN: %v", err)
		}
	}
}

func TestMeasure(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, schema)
	// Tenant 1 is big, 2..50 small; events spread over both partitions.
	pg.Exec(ctx, `
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, 50) g;
INSERT INTO orders SELECT 1, g, repeat('x', 200) FROM generate_series(1, 20000) g;
INSERT INTO orders SELECT 1 + g % 49 + 1, g, 'small' FROM generate_series(1, 2000) g;
INSERT INTO events SELECT 1 + g % 50, g, CASE WHEN g % 2 = 0 THEN date '2025-01-01' ELSE date '2035-01-01' END FROM generate_series(1, 5000) g;
ANALYZE;`)
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tables := []string{"tenants", "orders", "events"}
	sz, err := Measure(ctx, conn, "tenant_id", tables, MeasureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sz.Tables["orders"].Rows != 22000 || sz.Tables["events"].Rows != 5000 || sz.Tables["tenants"].Rows != 50 {
		t.Errorf("rows: %+v", sz.Tables)
	}
	if sz.Tables["events"].Bytes == 0 {
		t.Error("partitioned table has no bytes: partitions not summed")
	}
	var tableBytes, tenantBytes, tenantRows int64
	for _, ts := range sz.Tables {
		tableBytes += ts.Bytes
	}
	for _, ts := range sz.Tenants {
		tenantBytes += ts.Bytes
		tenantRows += ts.Rows
	}
	if diff := tableBytes - tenantBytes; diff < -100 || diff > 100 {
		t.Errorf("tenants add up to %d bytes, tables to %d", tenantBytes, tableBytes)
	}
	if tenantRows != 27050 || len(sz.Tenants) != 50 {
		t.Errorf("tenant rows %d over %d tenants", tenantRows, len(sz.Tenants))
	}
	if sz.Tenants[1].Bytes < 10*sz.Tenants[2].Bytes {
		t.Errorf("tenant 1 (%d bytes) should dwarf tenant 2 (%d)", sz.Tenants[1].Bytes, sz.Tenants[2].Bytes)
	}
	// Sampled: estimates, flagged.
	sampled, err := Measure(ctx, conn, "tenant_id", []string{"orders"}, MeasureOptions{SampleAboveRows: 1000, SampleRows: 11000})
	if err != nil {
		t.Fatal(err)
	}
	so := sampled.Tables["orders"]
	if !so.Sampled || so.Rows < 5000 || so.Rows > 60000 {
		t.Errorf("sampled orders: %+v (true rows 22000)", so)
	}
}

func TestSampleWrites(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, schema)
	pg.Exec(ctx, `INSERT INTO orders SELECT g % 10, g, 'x' FROM generate_series(1, 1000) g`)
	pool := pg.Pool(ctx)
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

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
	ws, err := SampleWrites(ctx, conn, "tenant_id", []string{"orders", "events"}, 2*time.Second)
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
	pg := testenv.Postgres(t, 1)[0]
	ctx := context.Background()
	pg.Exec(ctx, schema)
	conn, err := Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	_, err = SampleWrites(cctx, conn, "tenant_id", []string{"orders"}, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SampleWrites = %v, want deadline exceeded", err)
	}
	assertNoSlots(t, ctx, pg.DSNApp())
	// Unknown table: an error, and no slot left.
	if _, err := SampleWrites(ctx, conn, "tenant_id", []string{"nosuch"}, time.Second); err == nil {
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
		tuple string
		want  int64
		ok    bool
	}{
		{`id[bigint]:1 tenant_id[bigint]:42 note[text]:'x'`, 42, true},
		{`note[text]:'it''s tenant_id[bigint]:9 here' tenant_id[bigint]:-5`, -5, true},
		{`created[timestamp with time zone]:'2026-01-01 00:00:00+00' tenant_id[bigint]:7`, 7, true},
		{`tags[text[]]:'{a,b}' tenant_id[bigint]:8`, 8, true},
		{`tenant_id[bigint]:null id[bigint]:1`, 0, false},
		{`id[bigint]:1`, 0, false},
		{`(no-tuple-data)`, 0, false},
	}
	for _, tt := range tests {
		got, ok := keyValue(tt.tuple, "tenant_id")
		if got != tt.want || ok != tt.ok {
			t.Errorf("keyValue(%q) = %d, %v; want %d, %v", tt.tuple, got, ok, tt.want, tt.ok)
		}
	}
	p := &changeParser{key: "tenant_id", roots: map[string]string{"public.orders": "orders"}, writes: map[int64]int64{}}
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
