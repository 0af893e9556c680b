package demo_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/pgcluster"
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
				RAISE EXCEPTION 'tenant % is fenced', NEW.tenant_id USING ERRCODE = 'RS001';
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
		RetryIf: demo.SQLStates("RS001"), Mix: map[string]int{demo.TxLedger: 1, demo.TxNewOrder: 1},
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
