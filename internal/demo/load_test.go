package demo

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reshard/reshard/internal/pgerr"
)

func TestLoadAcknowledgedWritesPresent(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, DataOptions{Tenants: 30, Scale: 0.05, Seed: 5})
	router, err := NewStaticRouter(s.ranges, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLoader(LoadOptions{Tenants: s.tenants, Router: router, Workers: 4, Duration: 3 * time.Second, Seed: 1})
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
	for _, k := range []string{TxNewOrder, TxLedger, TxEvent, TxStatus, TxDelete} {
		if res.ByKind[k] == 0 {
			t.Errorf("no %s transaction acknowledged", k)
		}
	}
	for name, db := range s.db {
		if err := CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := CheckAcked(ctx, s.db, s.owner, res.Ledger, false); err != nil {
		t.Error(err)
	}
	// The check does see a missing write.
	bogus := append(res.Ledger[:1:1], LedgerWrite{Tenant: res.Ledger[0].Tenant, ID: 1 << 40, Amount: 1})
	if err := CheckAcked(ctx, s.db, s.owner, bogus, false); err == nil {
		t.Error("CheckAcked accepted a write that is not there")
	}
}

// TestLoadRetriesFence fences the heaviest tenant for a while with the cutover's SQLSTATE:
// its transactions are retried, not lost, and succeed once the fence is gone.
func TestLoadRetriesFence(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, DataOptions{Tenants: 10, Scale: 0.02, Seed: 9})
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
	router, _ := NewStaticRouter(s.ranges, s.dsn)
	counting := RouterFunc(func(ctx context.Context, tenant int64) (string, error) {
		routed.Add(1)
		return router.ShardFor(ctx, tenant)
	})
	l, err := NewLoader(LoadOptions{
		Tenants: s.tenants, Router: counting, Workers: 3, Duration: 3 * time.Second, Seed: 2,
		RetryIf: func(err error) bool { return pgerr.Is(err, pgerr.Fenced) }, Mix: map[string]int{TxLedger: 1, TxNewOrder: 1},
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
		if err := CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := CheckAcked(ctx, s.db, s.owner, res.Ledger, false); err != nil {
		t.Error(err)
	}
}
