package mover

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgcluster"
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

// peakMem samples the Go heap while f runs. It reads runtime/metrics, which does not stop
// the world (runtime.ReadMemStats, every 20 ms, did: its cost was counted as the mover's).
func peakMem(f func()) (heapMB float64) {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		for {
			metrics.Read(samples)
			if inUse := samples[0].Value.Uint64() + samples[1].Value.Uint64(); inUse > peak.Load() {
				peak.Store(inUse)
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

// cost is what one run took: wall time and the CPU it cost each party.
type cost struct {
	wall              time.Duration
	src, dst, process time.Duration // source server, target server, this process (the mover)
}

func (c cost) cpu() time.Duration { return c.src + c.dst + c.process }

func (c cost) String() string {
	return fmt.Sprintf("%.2fs (CPU: source %.2fs, target %.2fs, mover process %.2fs)",
		c.wall.Seconds(), c.src.Seconds(), c.dst.Seconds(), c.process.Seconds())
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f and returns its wall time and CPU per party. The CPU is read once the
// processes f started and that end on their own (PostgreSQL's table-sync workers and their
// WAL senders) are gone: a server charges a process's CPU when it reaps it.
func measure(b *testing.B, ctx context.Context, src, dst *testenv.PG, withProcess bool, f func()) cost {
	s0, d0, p0 := clusterCPU(src.DataDir()), clusterCPU(dst.DataDir()), processCPU()
	t0 := time.Now()
	f()
	c := cost{wall: time.Since(t0)}
	if withProcess {
		c.process = processCPU() - p0
	}
	sp, dp := src.Pool(ctx), dst.Pool(ctx)
	waitFor(b, ctx, time.Minute, func() bool {
		var syncs, senders, slots int
		_ = dp.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication worker' AND
			pid IN (SELECT pid FROM pg_stat_subscription WHERE relid IS NOT NULL)`).Scan(&syncs)
		_ = sp.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'),
			(SELECT count(*) FROM pg_replication_slots WHERE active)`).Scan(&senders, &slots)
		return syncs == 0 && senders <= slots
	})
	time.Sleep(200 * time.Millisecond)
	c.src, c.dst = clusterCPU(src.DataDir())-s0, clusterCPU(dst.DataDir())-d0
	return c
}

func best(cs []cost) cost {
	b := cs[0]
	for _, c := range cs[1:] {
		if c.wall < b.wall {
			b = c
		}
	}
	return b
}

const benchRounds = 3

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
	// Neither run should share the machine with the load's after-effects.
	mustExec(b, ctx, src, "VACUUM ANALYZE")
	mustExec(b, ctx, src, "CHECKPOINT")
	rng := catalog.NewRange(1, 101)
	pred := rng.SQL("tenant_id")
	var rows, bytes int64
	if err := src.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM orders WHERE %[1]s) + (SELECT count(*) FROM order_items WHERE %[1]s),
		(pg_table_size('orders') + pg_table_size('order_items')) * 100 / 120`, pred)).Scan(&rows, &bytes); err != nil {
		b.Fatal(err)
	}
	b.Logf("source loaded in %v: the range holds %d rows, about %d MB (100 of 120 tenants)", time.Since(loadStart).Round(time.Second), rows, bytes>>20)
	mustExec(b, ctx, src, fmt.Sprintf(`CREATE PUBLICATION bench_native FOR TABLE orders WHERE %[1]s, TABLE order_items WHERE %[1]s
		WITH (publish = 'insert, update, delete', publish_via_partition_root = true)`, pred))
	b.ResetTimer()

	// (a) Initial copy to caught-up, alternately, benchRounds times each into emptied targets.
	var nativeCopies, moverCopies []cost
	var m *Mover
	var j *memJournal
	var cfg Config
	var copyHeap float64
	copyRounds := benchRounds
	if n, err := strconv.Atoi(os.Getenv("MOVER_BENCH_COPY_ROUNDS")); err == nil && n > 0 {
		copyRounds = n
	}
	for round := 0; round < copyRounds; round++ {
		last := round == copyRounds-1
		mustExec(b, ctx, native, "TRUNCATE orders, order_items")
		mustExec(b, ctx, moved, "TRUNCATE orders, order_items")
		mustExec(b, ctx, native, "CHECKPOINT")
		mustExec(b, ctx, moved, "CHECKPOINT")
		c := measure(b, ctx, srcPG, nativePG, false, func() {
			mustExec(b, ctx, native, fmt.Sprintf(`CREATE SUBSCRIPTION bench_native CONNECTION '%s' PUBLICATION bench_native WITH (copy_data = true)`, srcPG.DSNApp()))
			waitFor(b, ctx, 30*time.Minute, func() bool {
				var rels, ready int
				if err := native.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE srsubstate = 'r') FROM pg_subscription_rel`).Scan(&rels, &ready); err != nil {
					b.Fatal(err)
				}
				return rels == 2 && ready == 2
			})
		})
		nativeCopies = append(nativeCopies, c)
		b.Logf("(a) round %d native:  %v", round+1, c)
		if !last {
			mustExec(b, ctx, native, `DROP SUBSCRIPTION bench_native`)
		}

		j = newMemJournal()
		cfg = Config{ID: fmt.Sprintf("bench%d", round), SourceDSN: srcPG.DSNApp(), TargetDSN: moverPG.DSNApp(), Key: "tenant_id",
			Tables: []string{"orders", "order_items"}, Range: rng, Workers: benchWorkers(), Logger: testLogger(b)}
		var c2 cost
		heap := peakMem(func() {
			c2 = measure(b, ctx, srcPG, moverPG, true, func() {
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
			})
		})
		copyHeap = max(copyHeap, heap)
		moverCopies = append(moverCopies, c2)
		rec := j.get(b, cfg.ID)
		b.Logf("(a) round %d reshard: %v; copy phase %.2fs, %d rows, %d MB", round+1, c2, rec.Timings.Copy, rec.RowsCopied, rec.BytesCopied>>20)
		if !last {
			if err := m.DropReplication(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	checkSameCounts(b, ctx, src, native, moved, pred)

	// (b) Drain a backlog of small transactions made while both appliers were stopped.
	txs := int(math.Round(40000 * scale))
	var nativeDrains, moverDrains, floorDrains []cost
	var drainHeap float64
	for round := 0; round < benchRounds; round++ {
		// Both slots first move their restart point up to now (a checkpoint logs the
		// running transactions that decoding restarts from), so that neither drain
		// re-decodes older WAL.
		settle := currentLSN(b, ctx, src)
		mustExec(b, ctx, src, "CHECKPOINT")
		waitFor(b, ctx, 2*time.Minute, func() bool {
			var behind int
			_ = src.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('bench_native', $1) AND restart_lsn < $2::pg_lsn`,
				m.slot, settle.String()).Scan(&behind)
			return behind == 0
		})
		mustExec(b, ctx, native, `ALTER SUBSCRIPTION bench_native DISABLE`)
		if err := m.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		waitFor(b, ctx, time.Minute, func() bool { // the apply worker has let go of its slot
			var active bool
			_ = src.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_native'`).Scan(&active)
			return !active
		})
		// The floor's slot starts at the same point, before the same backlog.
		mustExec(b, ctx, src, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'bench_floor'`)
		mustExec(b, ctx, src, `SELECT pg_create_logical_replication_slot('bench_floor', 'pgoutput')`)
		marker := -1 - round
		makeBacklog(b, ctx, src, txs, marker)
		end := currentLSN(b, ctx, src)
		mustExec(b, ctx, src, "CHECKPOINT")
		found := func(p *pgxpool.Pool) func() bool {
			return func() bool {
				var ok bool
				_ = p.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM orders WHERE tenant_id = 1 AND id = $1)`, marker).Scan(&ok)
				return ok
			}
		}
		b.StartTimer()
		// The launcher takes seconds to restart a re-enabled subscription's apply worker
		// (wal_retrieve_retry_interval); that is not the apply's speed, so the native
		// time starts once the worker streams.
		mustExec(b, ctx, native, `ALTER SUBSCRIPTION bench_native ENABLE`)
		waitFor(b, ctx, time.Minute, func() bool {
			var up bool
			_ = native.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_subscription WHERE subname = 'bench_native' AND pid IS NOT NULL)`).Scan(&up)
			return up
		})
		c := measure(b, ctx, srcPG, nativePG, false, func() { waitFor(b, ctx, 30*time.Minute, found(native)) })
		nativeDrains = append(nativeDrains, c)
		b.Logf("(b) round %d native:  %v", round+1, c)
		var c2 cost
		stopProfile := profileDrain(b, round)
		heap := peakMem(func() {
			c2 = measure(b, ctx, srcPG, moverPG, true, func() {
				m2, err := New(cfg, j)
				if err != nil {
					b.Fatal(err)
				}
				if err := m2.Start(ctx); err != nil {
					b.Fatal(err)
				}
				m = m2
				waitFor(b, ctx, 30*time.Minute, found(moved))
			})
		})
		stopProfile()
		drainHeap = max(drainHeap, heap)
		moverDrains = append(moverDrains, c2)
		b.Logf("(b) round %d reshard: %v", round+1, c2)
		c3 := drainToNull(b, ctx, srcPG, end)
		floorDrains = append(floorDrains, c3)
		b.Logf("(b) round %d floor (pg_recvlogical to /dev/null): %v", round+1, c3)
		b.StopTimer()
	}
	mustExec(b, ctx, src, `SELECT pg_drop_replication_slot('bench_floor')`)
	checkSameCounts(b, ctx, src, native, moved, pred)
	if err := m.DropReplication(ctx); err != nil {
		b.Fatal(err)
	}
	mustExec(b, ctx, native, `DROP SUBSCRIPTION bench_native`)

	nc, mc, nd, md, fd := best(nativeCopies), best(moverCopies), best(nativeDrains), best(moverDrains), best(floorDrains)
	copyRatio := mc.wall.Seconds() / nc.wall.Seconds()
	drainSpeedup := nd.wall.Seconds() / md.wall.Seconds()
	floorRatio := md.wall.Seconds() / fd.wall.Seconds()
	fmt.Printf(`
reshard's mover vs PostgreSQL's logical replication: same machine, same data, best of %d runs each
  (a) copy %d rows / %d MB to caught-up:   reshard %.2fx the native time (target <= 0.80x)
        native  %v
        reshard %v
  (b) drain %d small transactions:         reshard %.2fx as fast as native (target >= 2x), %.2fx the floor's time (target <= 1.2x)
        native  %v
        reshard %v
        floor   %v (pg_recvlogical from a slot at the same point to /dev/null: decoding and streaming only)
  mover peak Go heap: copy %.1f MB, drain %.1f MB; process max RSS %.0f MB (the benchmark's own load included)
`, benchRounds, rows, bytes>>20, copyRatio, nc, mc, txs, drainSpeedup, floorRatio, nd, md, fd, copyHeap, drainHeap, maxRSSMB())
	b.ReportMetric(nc.wall.Seconds(), "copy_native_s")
	b.ReportMetric(mc.wall.Seconds(), "copy_reshard_s")
	b.ReportMetric(copyRatio, "copy_ratio")
	b.ReportMetric(nd.wall.Seconds(), "drain_native_s")
	b.ReportMetric(md.wall.Seconds(), "drain_reshard_s")
	b.ReportMetric(drainSpeedup, "drain_speedup")
	b.ReportMetric(fd.wall.Seconds(), "drain_floor_s")
	b.ReportMetric(floorRatio, "drain_vs_floor")
	b.ReportMetric(max(copyHeap, drainHeap), "peak_heap_MB")
}

// drainToNull times the floor of a drain: pg_recvlogical reads the bench_floor slot's
// pgoutput stream (the native publication: the same row filter) up to end and throws it
// away. Its CPU is the source's (decoding, sending) and pg_recvlogical's own (as "mover
// process").
func drainToNull(b *testing.B, ctx context.Context, src *testenv.PG, end pglogrepl.LSN) cost {
	b.Helper()
	dir, err := pgcluster.BinDir()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "pg_recvlogical"), "-d", src.DSNApp(), "--slot", "bench_floor", "--start",
		"--endpos", end.String(), "--no-loop", "-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=bench_native")
	var c cost
	c = measure(b, ctx, src, src, false, func() {
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pg_recvlogical: %v\n%s", err, out)
		}
	})
	c.dst = 0
	c.process = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return c
}

// makeBacklog commits n small transactions on the source, then a marker row (id marker). Each adds an item to an order and updates the order's total, like pgbench's
// account update and history insert: tenants and orders are drawn pseudo-randomly from the
// 50 most recent orders of each tenant in the range (5,000 rows, each updated about 8 times
// over the backlog).
func makeBacklog(b *testing.B, ctx context.Context, pool *pgxpool.Pool, n, marker int) {
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
				tenant, -marker*10_000_000+done, order, tenant, order)
			done++
		}
		if done == n {
			fmt.Fprintf(&sb, "INSERT INTO orders VALUES (1, %d, 0, 'marker', 0, now(), 'end of backlog');", marker)
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

// benchWorkers is the mover's copy workers in the benchmark: one per core, as PostgreSQL's
// two table-sync workers on a two-core machine (more workers than cores only contend);
// MOVER_BENCH_WORKERS overrides it.
func benchWorkers() int {
	if n, err := strconv.Atoi(os.Getenv("MOVER_BENCH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// profileDrain writes a CPU profile of the mover's drain of the given round to
// $MOVER_BENCH_DRAIN_PROFILE.<round>, when that is set; the returned func stops it.
func profileDrain(b *testing.B, round int) func() {
	path := os.Getenv("MOVER_BENCH_DRAIN_PROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, round))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// clusterCPU is the CPU time used so far by a PostgreSQL cluster: the postmaster, its live
// children and the children it has reaped (Linux /proc; 0 elsewhere). The difference over
// a run is the work the run cost that server, whatever else the machine was doing.
func clusterCPU(dataDir string) time.Duration {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	total := procTicks(pm, true)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pm {
			continue
		}
		if ppid, ok := procParent(pid); ok && ppid == pm {
			total += procTicks(pid, false)
		}
	}
	return time.Duration(total) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// procStat returns the fields of /proc/pid/stat after the command name.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

func procParent(pid int) (int, bool) {
	f := procStat(pid)
	if len(f) < 2 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}

// procTicks is utime+stime (and the reaped children's, with children) in clock ticks.
func procTicks(pid int, children bool) int64 {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	var n int64
	last := 12
	if children {
		last = 14
	}
	for _, x := range f[11 : last+1] {
		v, _ := strconv.ParseInt(x, 10, 64)
		n += v
	}
	return n
}
