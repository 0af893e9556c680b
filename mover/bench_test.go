package mover

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// The side-by-side benchmark: the same data on the same machine, moved by reshard's mover
// and by PostgreSQL's own logical replication (a publication with the same row filter and
// CREATE SUBSCRIPTION ... WITH (copy_data = true)). Run it with `make bench` or
//
//	go test -run '^$' -bench MoverVsNative -benchtime 1x ./mover/
//
// MOVER_BENCH_SCALE=0.1 runs it on a tenth of the data.

const benchSchema = `
CREATE TABLE orders (
	tenant_id   bigint NOT NULL,
	id          bigint NOT NULL,
	customer_id bigint NOT NULL,
	status      text NOT NULL,
	total       numeric(12,2) NOT NULL,
	created_at  timestamptz NOT NULL,
	note        text,
	PRIMARY KEY (tenant_id, id)
);
CREATE TABLE order_items (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	order_id  bigint NOT NULL,
	sku       text NOT NULL,
	qty       integer NOT NULL,
	price     numeric(10,2) NOT NULL,
	attrs     jsonb,
	PRIMARY KEY (tenant_id, id)
);
`

// benchLoad fills tenants 1..120 (tenants 1..100 are the moved range) with orders and order
// items: about 1M rows and 170 MB in the range at scale 1.
func benchLoad(b *testing.B, ctx context.Context, pool *pgxpool.Pool, scale float64) {
	b.Helper()
	orders := int(math.Round(4000 * scale))
	items := int(math.Round(6000 * scale))
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO orders SELECT t, o, (o * 7919) %% 100000, (ARRAY['new','paid','shipped','done'])[1 + o %% 4],
			(o %% 100000) / 100.0, timestamptz '2024-01-01' + o * interval '37 seconds',
			'order note ' || md5((t * 1000000 + o)::text) || ' deliver to door ' || (o %% 97) || ' ref ' || left(md5(o::text), 24)
			FROM generate_series(1, 120) t, generate_series(1, %d) o`, orders),
		fmt.Sprintf(`INSERT INTO order_items SELECT t, i, 1 + i %% %d, 'SKU-' || lpad((i * 31 %% 99991)::text, 6, '0'), 1 + i %% 5, (i %% 5000) / 10.0,
			jsonb_build_object('color', (ARRAY['red','green','blue'])[1 + i %% 3], 'size', i %% 44, 'gift', i %% 7 = 0, 'ref', md5(i::text))
			FROM generate_series(1, 120) t, generate_series(1, %d) i`, orders, items),
		`ANALYZE orders; ANALYZE order_items`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
}

// peakMem samples the Go heap while f runs.
func peakMem(f func()) (heapMB float64) {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	runtime.GC()
	f()
	close(stop)
	<-done
	return float64(peak.Load()) / (1 << 20)
}

func maxRSSMB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

func BenchmarkMoverVsNative(b *testing.B) {
	scale := 1.0
	if s := os.Getenv("MOVER_BENCH_SCALE"); s != "" {
		if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 {
			scale = v
		}
	}
	ctx := context.Background()
	pgs := testenv.Postgres(b, 3)
	srcPG, nativePG, moverPG := pgs[0], pgs[1], pgs[2]
	for _, p := range pgs {
		p.Exec(ctx, benchSchema)
	}
	src, native, moved := srcPG.Pool(ctx), nativePG.Pool(ctx), moverPG.Pool(ctx)
	loadStart := time.Now()
	benchLoad(b, ctx, src, scale)
	rng := catalog.NewRange(1, 101)
	pred := rng.SQL("tenant_id")
	var rows, bytes int64
	if err := src.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM orders WHERE %[1]s) + (SELECT count(*) FROM order_items WHERE %[1]s),
		(pg_table_size('orders') + pg_table_size('order_items')) * 100 / 120`, pred)).Scan(&rows, &bytes); err != nil {
		b.Fatal(err)
	}
	b.Logf("source loaded in %v: the range holds %d rows, about %d MB (of %d tenants, %d are moved)",
		time.Since(loadStart).Round(time.Second), rows, bytes>>20, 120, 100)

	// (a) Initial copy to caught-up.
	// Native: publication + subscription with copy_data; done when every table is ready.
	b.ResetTimer()
	nativeStart := time.Now()
	mustExec(b, ctx, src, fmt.Sprintf(`CREATE PUBLICATION bench_native FOR TABLE orders WHERE %[1]s, TABLE order_items WHERE %[1]s
		WITH (publish = 'insert, update, delete', publish_via_partition_root = true)`, pred))
	mustExec(b, ctx, native, fmt.Sprintf(`CREATE SUBSCRIPTION bench_native CONNECTION '%s' PUBLICATION bench_native WITH (copy_data = true)`, srcPG.DSNApp()))
	waitFor(b, ctx, 30*time.Minute, func() bool {
		var notReady int
		if err := native.QueryRow(ctx, `SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'`).Scan(&notReady); err != nil {
			b.Fatal(err)
		}
		var rels int
		_ = native.QueryRow(ctx, `SELECT count(*) FROM pg_subscription_rel`).Scan(&rels)
		return rels == 2 && notReady == 0
	})
	nativeCopy := time.Since(nativeStart)
	b.Logf("native: copied and caught up in %v", nativeCopy.Round(time.Millisecond))

	// reshard's mover.
	j := newMemJournal()
	cfg := Config{ID: "bench", SourceDSN: srcPG.DSNApp(), TargetDSN: moverPG.DSNApp(), Key: "tenant_id",
		Tables: []string{"orders", "order_items"}, Range: rng, Logger: testLogger(b)}
	var m *Mover
	var moverCopy time.Duration
	copyHeap := peakMem(func() {
		moverStart := time.Now()
		var err error
		if m, err = New(cfg, j); err != nil {
			b.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.WaitApplied(ctx, currentLSN(b, ctx, src)); err != nil {
			b.Fatal(err)
		}
		moverCopy = time.Since(moverStart)
	})
	rec := j.get(b, "bench")
	b.Logf("reshard: copied %d rows, %d MB in %.2fs, caught up in %v", rec.RowsCopied, rec.BytesCopied>>20, rec.Timings.Copy, moverCopy.Round(time.Millisecond))
	b.StopTimer()
	checkSameCounts(b, ctx, src, native, moved, pred)

	// (b) Drain a backlog of small transactions.
	mustExec(b, ctx, native, `ALTER SUBSCRIPTION bench_native DISABLE`)
	if err := m.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	waitFor(b, ctx, time.Minute, func() bool { // the apply worker has let go of its slot
		var active bool
		_ = src.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_native'`).Scan(&active)
		return !active
	})
	txs := int(math.Round(40000 * scale))
	backlogStart := time.Now()
	makeBacklog(b, ctx, src, txs)
	b.Logf("backlog: %d transactions written in %v", txs, time.Since(backlogStart).Round(time.Millisecond))
	marker := `SELECT EXISTS (SELECT 1 FROM orders WHERE tenant_id = 1 AND id = -1)`

	b.StartTimer()
	drainStart := time.Now()
	mustExec(b, ctx, native, `ALTER SUBSCRIPTION bench_native ENABLE`)
	var workerUp time.Duration
	waitFor(b, ctx, 30*time.Minute, func() bool {
		if workerUp == 0 {
			var pid *int32
			_ = native.QueryRow(ctx, `SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_native' AND received_lsn IS NOT NULL`).Scan(&pid)
			if pid != nil {
				workerUp = time.Since(drainStart)
			}
		}
		var ok bool
		_ = native.QueryRow(ctx, marker).Scan(&ok)
		return ok
	})
	// The launcher takes seconds to restart a re-enabled subscription's apply worker
	// (wal_retrieve_retry_interval); that is not the apply's speed, so it is left out.
	nativeEnd2End := time.Since(drainStart)
	nativeDrain := nativeEnd2End - workerUp
	b.Logf("native: drained in %v after its apply worker was up (%v from ENABLE)", nativeDrain.Round(time.Millisecond), nativeEnd2End.Round(time.Millisecond))

	var moverDrain time.Duration
	drainHeap := peakMem(func() {
		drainStart = time.Now()
		m2, err := New(cfg, j)
		if err != nil {
			b.Fatal(err)
		}
		if err := m2.Start(ctx); err != nil {
			b.Fatal(err)
		}
		waitFor(b, ctx, 30*time.Minute, func() bool {
			var ok bool
			_ = moved.QueryRow(ctx, marker).Scan(&ok)
			return ok
		})
		moverDrain = time.Since(drainStart)
		m = m2
	})
	b.Logf("reshard: drained in %v", moverDrain.Round(time.Millisecond))
	b.StopTimer()
	checkSameCounts(b, ctx, src, native, moved, pred)
	if err := m.DropReplication(ctx); err != nil {
		b.Fatal(err)
	}
	mustExec(b, ctx, native, `DROP SUBSCRIPTION bench_native`)

	copyRatio := moverCopy.Seconds() / nativeCopy.Seconds()
	drainSpeedup := nativeDrain.Seconds() / moverDrain.Seconds()
	summary := fmt.Sprintf(`
mover vs native logical replication (PostgreSQL 15, same machine, same data)
  (a) copy to caught-up, %d rows / %d MB:  native %.2fs   reshard %.2fs   ratio %.2fx (target <= 0.80x)
  (b) drain %d small transactions:          native %.2fs   reshard %.2fs   reshard %.1fx faster (target >= 2x)
      (native's time starts once its apply worker streams; from ALTER SUBSCRIPTION ENABLE it took %.2fs)
  mover peak Go heap: copy %.1f MB, drain %.1f MB; process max RSS %.0f MB (includes the benchmark's own load)
`, rows, bytes>>20, nativeCopy.Seconds(), moverCopy.Seconds(), copyRatio,
		txs, nativeDrain.Seconds(), moverDrain.Seconds(), drainSpeedup, nativeEnd2End.Seconds(), copyHeap, drainHeap, maxRSSMB())
	fmt.Print(summary)
	b.ReportMetric(nativeCopy.Seconds(), "copy_native_s")
	b.ReportMetric(moverCopy.Seconds(), "copy_reshard_s")
	b.ReportMetric(copyRatio, "copy_ratio")
	b.ReportMetric(nativeDrain.Seconds(), "drain_native_s")
	b.ReportMetric(moverDrain.Seconds(), "drain_reshard_s")
	b.ReportMetric(drainSpeedup, "drain_speedup")
	b.ReportMetric(max(copyHeap, drainHeap), "peak_heap_MB")
}

// makeBacklog commits n small transactions on the source, the last one writing a marker
// row. Each adds an item to an order and updates the order's total, like pgbench's
// account update and history insert: tenants and orders are drawn pseudo-randomly from the
// 50 most recent orders of each tenant in the range (5,000 rows, each updated about 8 times
// over the backlog).
func makeBacklog(b *testing.B, ctx context.Context, pool *pgxpool.Pool, n int) {
	b.Helper()
	const per = 500
	x := uint64(12345)
	next := func(m int) int {
		x = x*6364136223846793005 + 1442695040888963407
		return int((x >> 33) % uint64(m))
	}
	for done := 0; done < n; {
		var sb strings.Builder
		for k := 0; k < per && done < n; k++ {
			tenant, order := 1+next(100), 1+next(50)
			fmt.Fprintf(&sb, "BEGIN; INSERT INTO order_items VALUES (%d, %d, %d, 'SKU-NEW', 1, 9.99, '{\"backlog\": true}'); "+
				"UPDATE orders SET total = total + 9.99, status = 'paid' WHERE tenant_id = %d AND id = %d; COMMIT;\n",
				tenant, 10_000_000+done, order, tenant, order)
			done++
		}
		if done == n {
			sb.WriteString("INSERT INTO orders VALUES (1, -1, 0, 'marker', 0, now(), 'end of backlog');")
		}
		if _, err := pool.Exec(ctx, sb.String()); err != nil {
			b.Fatal(err)
		}
	}
}

func waitFor(b *testing.B, ctx context.Context, limit time.Duration, ok func() bool) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			b.Fatalf("not done after %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSameCounts compares row counts and a content hash of the range on all three.
func checkSameCounts(b *testing.B, ctx context.Context, src, native, moved *pgxpool.Pool, pred string) {
	b.Helper()
	q := fmt.Sprintf(`SELECT (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM orders t WHERE %[1]s) || '/' ||
		(SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM order_items t WHERE %[1]s)`, pred)
	var a, n, r string
	for _, x := range []struct {
		p *pgxpool.Pool
		s *string
	}{{src, &a}, {native, &n}, {moved, &r}} {
		if err := x.p.QueryRow(ctx, q).Scan(x.s); err != nil {
			b.Fatal(err)
		}
	}
	if a != n || a != r {
		b.Fatalf("range differs: source %s, native %s, reshard %s", a, n, r)
	}
}
