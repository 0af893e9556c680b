package demo_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/pgcluster"
	"github.com/reshard/reshard/internal/pgerr"
	"github.com/reshard/reshard/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgcluster.RemoveTemplate()
	os.Exit(code)
}

// stack is two real shards with the demo schema and a small data set.
type stack struct {
	ranges  []catalog.Range
	dsn     map[string]string
	db      map[string]demo.Querier
	pool    map[string]*pgxpool.Pool
	tenants []demo.Tenant
}

func (s *stack) owner(tenant int64) string {
	st := catalog.State{Ranges: s.ranges}
	r, _ := st.Owner(tenant)
	return r.Shard
}

func newStack(t *testing.T, opts demo.DataOptions) *stack {
	t.Helper()
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	names := []string{"s1", "s2"}
	s := &stack{ranges: catalog.EvenRanges(names), dsn: map[string]string{}, db: map[string]demo.Querier{}, pool: map[string]*pgxpool.Pool{}}
	opts.HotRange = s.ranges[0].Range
	var err error
	if s.tenants, err = demo.GenerateTenants(opts); err != nil {
		t.Fatal(err)
	}
	placed, err := demo.Place(s.tenants, s.ranges)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		s.dsn[name] = pgs[i].DSNApp()
		s.pool[name] = pgs[i].Pool(ctx)
		s.db[name] = s.pool[name]
		conn, err := pgx.Connect(ctx, pgs[i].DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		if err := demo.CreateSchema(ctx, conn, time.Now()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		counts, err := demo.LoadShard(ctx, conn, placed[name], opts)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d tenants loaded in %v: %v", name, len(placed[name]), time.Since(start).Round(time.Millisecond), counts)
		if counts["tenants"] != int64(len(placed[name])) {
			t.Fatalf("%s: %d tenants rows, want %d", name, counts["tenants"], len(placed[name]))
		}
	}
	return s
}

func TestLoadShardData(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, demo.DataOptions{Tenants: 40, Scale: 0.1, Seed: 3})
	total := int64(0)
	for name, db := range s.pool {
		if err := demo.CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		var orders, items, orphanItems, events, inDefault int64
		q := `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
			(SELECT count(*) FROM order_items i WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = i.tenant_id AND o.id = i.order_id)),
			(SELECT count(*) FROM events), (SELECT count(*) FROM events_default)`
		if err := db.QueryRow(ctx, q).Scan(&orders, &items, &orphanItems, &events, &inDefault); err != nil {
			t.Fatal(err)
		}
		if orphanItems != 0 || inDefault != 0 || events != orders || items < orders {
			t.Errorf("%s: orders %d items %d (orphans %d) events %d (in default %d)", name, orders, items, orphanItems, events, inDefault)
		}
		// Every row is on the shard that owns its tenant.
		rows, err := db.Query(ctx, "SELECT tenant_id FROM tenants")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if s.owner(id) != name {
				t.Errorf("tenant %d on %s, owned by %s", id, name, s.owner(id))
			}
		}
		total += orders
	}
	want := int64(0)
	for _, tn := range s.tenants {
		want += int64(tn.Orders)
	}
	if total != want {
		t.Errorf("%d orders over the shards, want %d", total, want)
	}
}

func TestLoadAcknowledgedWritesPresent(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 5})
	router, err := demo.NewStaticRouter(s.ranges, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := demo.NewLoader(demo.LoadOptions{Tenants: s.tenants, Router: router, Workers: 4, Duration: 3 * time.Second, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %+v in %.1fs (%.0f tx/s), %d ledger rows acknowledged", res.Counters, res.Seconds, float64(res.Acked)/res.Seconds, len(res.Ledger))
	if res.Acked == 0 || len(res.Ledger) == 0 || res.Failed != 0 || res.Unknown != 0 {
		t.Fatalf("load did not run cleanly: %+v errors %v", res.Counters, res.Errors)
	}
	for _, k := range []string{demo.TxNewOrder, demo.TxLedger, demo.TxEvent, demo.TxStatus, demo.TxDelete} {
		if res.ByKind[k] == 0 {
			t.Errorf("no %s transaction acknowledged", k)
		}
	}
	for name, db := range s.db {
		if err := demo.CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := demo.CheckAcked(ctx, s.db, s.owner, res.Ledger, false); err != nil {
		t.Error(err)
	}
	// The check does see a missing write.
	bogus := append(res.Ledger[:1:1], demo.LedgerWrite{Tenant: res.Ledger[0].Tenant, ID: 1 << 40, Amount: 1})
	if err := demo.CheckAcked(ctx, s.db, s.owner, bogus, false); err == nil {
		t.Error("CheckAcked accepted a write that is not there")
	}
}

// TestLoadRetriesFence fences the heaviest tenant for a while with the cutover's SQLSTATE:
// its transactions are retried, not lost, and succeed once the fence is gone.
func TestLoadRetriesFence(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, demo.DataOptions{Tenants: 10, Scale: 0.02, Seed: 9})
	hot := s.tenants[0].ID
	pool := s.pool[s.owner(hot)]
	if _, err := pool.Exec(ctx, `
		CREATE TABLE fence (tenant_id bigint);
		CREATE FUNCTION fenced() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF EXISTS (SELECT 1 FROM fence WHERE tenant_id = NEW.tenant_id) THEN
				RAISE EXCEPTION 'tenant % is fenced', NEW.tenant_id USING ERRCODE = '`+pgerr.Fenced+`';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fenced BEFORE INSERT OR UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION fenced();
		CREATE TRIGGER fenced BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION fenced();`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO fence VALUES ($1)", hot); err != nil {
		t.Fatal(err)
	}
	var routed atomic.Int64
	router, _ := demo.NewStaticRouter(s.ranges, s.dsn)
	counting := demo.RouterFunc(func(ctx context.Context, tenant int64) (string, error) {
		routed.Add(1)
		return router.ShardFor(ctx, tenant)
	})
	l, err := demo.NewLoader(demo.LoadOptions{
		Tenants: s.tenants, Router: counting, Workers: 3, Duration: 3 * time.Second, Seed: 2,
		RetryIf: func(err error) bool { return pgerr.Is(err, pgerr.Fenced) }, Mix: map[string]int{demo.TxLedger: 1, demo.TxNewOrder: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(time.Second)
		_, _ = pool.Exec(context.Background(), "DELETE FROM fence")
	}()
	res, err := l.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %+v errors %v", res.Counters, res.Errors)
	if res.Fenced == 0 {
		t.Fatal("no transaction met the fence")
	}
	if res.Failed != 0 || res.Unknown != 0 {
		t.Fatalf("fenced transactions were not retried to success: %+v %v", res.Counters, res.Errors)
	}
	if routed.Load() != res.Attempts {
		t.Errorf("router asked %d times for %d attempts: every retry must ask again", routed.Load(), res.Attempts)
	}
	hotAcked := 0
	for _, w := range res.Ledger {
		if w.Tenant == hot {
			hotAcked++
		}
	}
	if hotAcked == 0 {
		t.Error("no ledger write of the fenced tenant acknowledged after the fence was lifted")
	}
	for name, db := range s.db {
		if err := demo.CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := demo.CheckAcked(ctx, s.db, s.owner, res.Ledger, false); err != nil {
		t.Error(err)
	}
}

// TestCheckTenantsAfterLoad: after a load that leaves a spread of tenants quiet, every
// tenant's rows on every shard are what the start and the load's acknowledged changes say
// (the loader's own accounting, checked against PostgreSQL); then rows lost, altered or
// copied behind the load's back are each reported naming the tenant, table and shard.
func TestCheckTenantsAfterLoad(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, demo.DataOptions{Tenants: 30, Scale: 0.05, Seed: 5})
	quiet := demo.QuietTenants(s.tenants, 3, 2)
	before, err := demo.TakeSnapshot(ctx, s.db, demo.Tables)
	if err != nil {
		t.Fatal(err)
	}
	router, err := demo.NewStaticRouter(s.ranges, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	res, err := demo.Load(ctx, demo.LoadOptions{Tenants: s.tenants, Router: router, Workers: 3, Duration: 2 * time.Second, Seed: 3, Quiet: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if res.Acked == 0 || res.Failed != 0 || res.Unknown != 0 || res.ByKind[demo.TxDelete] == 0 {
		t.Fatalf("load did not run cleanly: %+v %v", res.Counters, res.Errors)
	}
	for q := range quiet {
		if res.Changes.Touched[q] {
			t.Errorf("quiet tenant %d was written to", q)
		}
	}
	rep, err := demo.CheckTenants(ctx, s.db, demo.Tables, before, s.owner, res.Changes)
	if err != nil {
		t.Fatalf("after a clean load: %v", err)
	}
	var b strings.Builder
	rep.Print(&b)
	t.Logf("tenants checked:\n%s", b.String())
	for _, sh := range rep.Shards {
		if sh.Quiet == 0 || sh.Counted == 0 {
			t.Errorf("shard %s: %d quiet and %d written tenants checked, want some of each", sh.Shard, sh.Quiet, sh.Counted)
		}
	}

	// Behind the load's back: a quiet tenant loses an event, another's order changes, and
	// a written tenant's row appears on the shard that does not own it.
	var q1, q2, busy int64
	for _, tn := range s.tenants {
		switch {
		case quiet[tn.ID] && q1 == 0:
			q1 = tn.ID
		case quiet[tn.ID] && q2 == 0:
			q2 = tn.ID
		case res.Changes.Touched[tn.ID] && busy == 0:
			busy = tn.ID
		}
	}
	other := map[string]string{"s1": "s2", "s2": "s1"}
	if _, err := s.pool[s.owner(q1)].Exec(ctx, `DELETE FROM events WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM events WHERE tenant_id = $1 LIMIT 1)`, q1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool[s.owner(q2)].Exec(ctx, `UPDATE orders SET total = total + 1 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM orders WHERE tenant_id = $1 LIMIT 1)`, q2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool[other[s.owner(busy)]].Exec(ctx, `INSERT INTO ledger (tenant_id, amount, memo) VALUES ($1, 1, 'stray')`, busy); err != nil {
		t.Fatal(err)
	}
	_, err = demo.CheckTenants(ctx, s.db, demo.Tables, before, s.owner, res.Changes)
	t.Logf("after the damage: %v", err)
	for _, want := range []string{
		fmt.Sprintf("tenant %d (quiet): events on %s: ", q1, s.owner(q1)),
		fmt.Sprintf("tenant %d (quiet): orders on %s: ", q2, s.owner(q2)),
		"as at the start, but their contents differ (hash)",
		fmt.Sprintf("tenant %d (written): ledger on %s: 1 rows, but %s does not own it", busy, other[s.owner(busy)], other[s.owner(busy)]),
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("the check does not report %q", want)
		}
	}
}

// TestFingerprintTextFallback: a table with a column type that has no hash function (json)
// is fingerprinted through the rows' text, and a changed value still shows.
func TestFingerprintTextFallback(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE notes (tenant_id bigint NOT NULL, id int NOT NULL, j json, PRIMARY KEY (tenant_id, id));
		INSERT INTO notes SELECT t, i, json_build_object('i', i) FROM generate_series(1, 3) t, generate_series(1, 4) i`)
	db := pg.Pool(ctx)
	a, err := demo.Fingerprint(ctx, db, []string{"notes"})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3 || a[2]["notes"].Rows != 4 {
		t.Fatalf("fingerprint %+v", a)
	}
	pg.Exec(ctx, `UPDATE notes SET j = '{"i": 99}' WHERE tenant_id = 2 AND id = 1`)
	b, err := demo.Fingerprint(ctx, db, []string{"notes"})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Diff("s1", b)
	if err == nil || !strings.Contains(err.Error(), "tenant 2: notes on s1: 4 rows as expected but their contents differ") || strings.Contains(err.Error(), "tenant 1") {
		t.Fatalf("Diff = %v", err)
	}
}

// TestFingerprintColumnOrder: the same rows in tables whose physical column order differs
// (columns added in another order on another shard) have the same fingerprint.
func TestFingerprintColumnOrder(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE a (tenant_id bigint NOT NULL, x int, y text);
		CREATE TABLE b (y text, dropped int, tenant_id bigint NOT NULL, x int);
		ALTER TABLE b DROP COLUMN dropped;
		INSERT INTO a SELECT t, i, 'v' || i FROM generate_series(1, 3) t, generate_series(1, 5) i;
		INSERT INTO b (tenant_id, x, y) SELECT tenant_id, x, y FROM a`)
	f, err := demo.Fingerprint(ctx, pg.Pool(ctx), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for tenant, tables := range f {
		if tables["a"] != tables["b"] || tables["a"].Rows != 5 {
			t.Errorf("tenant %d: a %+v, b %+v", tenant, tables["a"], tables["b"])
		}
	}
}
