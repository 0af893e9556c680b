package catalog_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/planner"
)

// BenchmarkCatalogScale measures the catalog at fleet scale on a real etcd: 10,000 shards
// and 1,000,000 ranges (RESHARD_SCALE_SHARDS, RESHARD_SCALE_RANGES and RESHARD_SCALE_FLIPS
// change the sizes). etcd runs in a child process (this test binary, as
// TestScaleHelperProcess), and so does the writer of the flips, so the time, allocations,
// heap and RSS reported are the measured client's alone. Run it with `make bench-scale`
// (docs/scale.md has the figures): each step runs once.
func BenchmarkCatalogScale(b *testing.B) {
	if testing.Short() {
		b.Skip("starts etcd and writes a million keys")
	}
	sc := scaleFromEnv(b)
	ep := startHelper(b, "etcd", nil)
	s, cli := scaleStore(b, ep)
	ctx := context.Background()
	b.Logf("catalog: %d shards, %d ranges; etcd at %s in a child process", sc.shards, sc.ranges, ep)
	b.Run("init", func(b *testing.B) {
		shards, ranges := sc.catalog()
		m := startMeasure()
		if err := s.Init(ctx, catalog.Config{Cluster: "scale", Key: "tenant_id", Tables: []string{"t"}}, shards, ranges, false); err != nil {
			b.Fatal(err)
		}
		m.report(b, "init", nil)
		dbSize(b, cli, ep)
	})
	var st *catalog.State
	var err error
	b.Run("load", func(b *testing.B) {
		m := startMeasure()
		st, err = s.Load(ctx)
		if err != nil || len(st.Ranges) != sc.ranges {
			b.Fatalf("load: %v", err)
		}
		m.report(b, "load", st)
	})
	var cache *catalog.Cache
	b.Run("first-sync", func(b *testing.B) {
		st = nil // only the cache's own copy stays
		m := startMeasure()
		cache, err = s.Watch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		res := catalog.NewResolver(cache)
		if _, err := res.Resolve(42); err != nil {
			b.Fatal(err)
		}
		m.report(b, "sync", cache)
	})
	defer cache.Close()
	b.Run("resolve", func(b *testing.B) {
		res := catalog.NewResolver(cache)
		const n = 1_000_000
		start, cpu := time.Now(), selfCPU()
		k := uint64(0)
		for range n {
			k += 0x9E3779B97F4A7C15
			if _, err := res.Resolve(int64(k)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/n, "ns/resolve")
		b.ReportMetric(float64((selfCPU()-cpu).Nanoseconds())/n, "cpu-ns/resolve")
	})
	b.Run(fmt.Sprintf("follow-%d-flips", sc.flips), func(b *testing.B) { followFlips(b, sc, ep, cache) })
	b.Run("etcd-db", func(b *testing.B) { dbSize(b, cli, ep) })
	b.Run("plan", func(b *testing.B) {
		st := cache.State()
		stats := syntheticStats(st)
		m := startMeasure()
		p, err := planner.Compute(st, stats, planner.DefaultOptions())
		if err != nil {
			b.Fatal(err)
		}
		m.report(b, "plan", p)
		b.ReportMetric(float64(p.Moves), "moves")
		b.ReportMetric(float64(p.Splits), "splits")
		b.ReportMetric(p.MaxMeanBefore, "max/mean-before")
		b.ReportMetric(p.MaxMeanAfter, "max/mean-after")
	})
}

// followFlips has a child process make the flips (a journal, freeze and flip each) while
// the cache follows them; it reports what following cost this process, and the writer's
// time per Freeze and Flip.
func followFlips(b *testing.B, sc scale, ep string, cache *catalog.Cache) {
	m := startMeasure()
	out := startHelper(b, "flips", []string{"RESHARD_SCALE_ENDPOINT=" + ep, "RESHARD_SCALE_FLIPS=" + strconv.Itoa(sc.flips)})
	f := strings.Fields(out) // revision, then the writer's ms per freeze and per flip
	if len(f) != 3 {
		b.Fatalf("flip writer said %q", out)
	}
	rev, _ := strconv.ParseInt(f[0], 10, 64)
	done := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := cache.WaitRevision(ctx, rev)
	if err != nil {
		b.Fatal(err)
	}
	lag := time.Since(done)
	m.report(b, "follow", cache)
	b.ReportMetric(float64(m.allocBytes)/float64(sc.flips)/1024, "KiB-alloc/flip")
	b.ReportMetric(float64(lag.Milliseconds()), "ms-behind-at-end")
	freeze, _ := strconv.ParseFloat(f[1], 64)
	flip, _ := strconv.ParseFloat(f[2], 64)
	b.ReportMetric(freeze, "writer-ms/freeze")
	b.ReportMetric(flip, "writer-ms/flip")
	if err := catalog.ValidateRanges(st.Ranges, st.Shards); err != nil {
		b.Fatal(err)
	}
	flipped := 0
	for _, mg := range st.Migrations {
		if mg.Phase == catalog.PhaseFlipped {
			flipped++
		}
	}
	if flipped != sc.flips {
		b.Fatalf("the cache shows %d flipped migrations, want %d", flipped, sc.flips)
	}
}

func dbSize(b *testing.B, cli *clientv3.Client, ep string) {
	resp, err := cli.Status(context.Background(), ep)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(resp.DbSize)/(1<<20), "db-MiB")
	b.ReportMetric(float64(resp.DbSizeInUse)/(1<<20), "db-in-use-MiB")
	rss := procPeakRSS(etcdPID)
	b.ReportMetric(float64(rss)/(1<<20), "etcd-peak-RSS-MiB")
	b.Logf("etcd: database %d MiB (%d MiB in use), revision %d, its peak RSS %d MiB", resp.DbSize>>20, resp.DbSizeInUse>>20, resp.Header.Revision, rss>>20)
}

type scale struct{ shards, ranges, flips int }

func scaleFromEnv(b *testing.B) scale {
	sc := scale{shards: 10_000, ranges: 1_000_000, flips: 1000}
	for _, v := range []struct {
		env string
		p   *int
	}{{"RESHARD_SCALE_SHARDS", &sc.shards}, {"RESHARD_SCALE_RANGES", &sc.ranges}, {"RESHARD_SCALE_FLIPS", &sc.flips}} {
		if s := os.Getenv(v.env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 2 {
				b.Fatalf("%s=%q: want a whole number of at least 2", v.env, s)
			}
			*v.p = n
		}
	}
	if sc.flips > sc.ranges/2 || sc.ranges < sc.shards {
		b.Fatalf("%+v: want at least as many ranges as shards and twice as many as flips", sc)
	}
	return sc
}

// catalog is the synthetic fleet: shards s00000.. and ranges of equal width over the key
// line, range i on shard i mod shards.
func (sc scale) catalog() ([]catalog.Shard, []catalog.Range) {
	shards := make([]catalog.Shard, sc.shards)
	for i := range shards {
		name := fmt.Sprintf("s%05d", i)
		shards[i] = catalog.Shard{Name: name, DSN: "host=db" + strconv.Itoa(i) + ".internal port=5432 user=reshard dbname=app"}
	}
	ranges := make([]catalog.Range, sc.ranges)
	step := uint64(math.MaxUint64 / uint64(sc.ranges))
	for i := range ranges {
		lo := math.MinInt64 + int64(uint64(i)*step) // wraps past zero as intended
		kr := catalog.KeyRange{Lo: lo, Hi: lo + int64(step)}
		if i == len(ranges)-1 {
			kr = catalog.From(lo)
		}
		ranges[i] = catalog.Range{Range: kr, Shard: shards[i%sc.shards].Name}
	}
	return shards, ranges
}

// syntheticStats gives each range Zipf-like bytes (rank r weighs r^-0.8) and writes
// loosely following them, and each shard the sum of its ranges.
func syntheticStats(st *catalog.State) *catalog.Stats {
	r := rand.New(rand.NewSource(1))
	w := make([]float64, len(st.Ranges))
	var total float64
	for i := range w {
		w[i] = math.Pow(float64(i+1), -0.8)
		total += w[i]
	}
	r.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
	stats := &catalog.Stats{Shards: map[string]catalog.ShardStats{}, Ranges: make([]catalog.RangeStats, len(st.Ranges))}
	for i, rg := range st.Ranges {
		share := w[i] / total
		rs := catalog.RangeStats{Range: rg.Range, Shard: rg.Shard, Bytes: int64(share * (1 << 50)), WritesPerSec: share * 2e6 * (0.5 + r.Float64()), Keys: 1000}
		stats.Ranges[i] = rs
		ss := stats.Shards[rg.Shard]
		ss.Shard, ss.Bytes = rg.Shard, ss.Bytes+rs.Bytes
		stats.Shards[rg.Shard] = ss
	}
	return stats
}

// measure follows one step: wall time, bytes and objects allocated, the highest live heap
// (sampled every 10ms), the live heap after a GC while the result is still held, and the
// process's peak RSS (reset at the start through /proc/self/clear_refs).
type measure struct {
	start       time.Time
	cpu0, etcd0 time.Duration
	m0          runtime.MemStats
	peak        uint64
	mu          sync.Mutex
	stop, done  chan struct{}
	allocBytes  uint64
	allocs      uint64
	resetRSSHWM bool
}

func startMeasure() *measure {
	runtime.GC()
	m := &measure{stop: make(chan struct{}), done: make(chan struct{})}
	m.resetRSSHWM = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	runtime.ReadMemStats(&m.m0)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(m.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			m.mu.Lock()
			m.peak = max(m.peak, sample[0].Value.Uint64())
			m.mu.Unlock()
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	m.start = time.Now()
	m.cpu0, m.etcd0 = selfCPU(), etcdCPU()
	return m
}

// etcdPID is the etcd helper's process, whose CPU time each step reports: on a shared
// machine wall time says more about the neighbours than about the catalog.
var etcdPID int

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// etcdCPU is the etcd helper's user and system CPU time (/proc/PID/stat, in clock ticks
// of 10ms).
func etcdCPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", etcdPID))
	if err != nil || etcdPID == 0 {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// report ends the step and reports it; keep is what the step built, held through the GC
// that measures what it retains.
func (m *measure) report(b *testing.B, what string, keep any) {
	took := time.Since(m.start)
	cpu, ecpu := selfCPU()-m.cpu0, etcdCPU()-m.etcd0
	close(m.stop)
	<-m.done
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	m.allocBytes, m.allocs = m1.TotalAlloc-m.m0.TotalAlloc, m1.Mallocs-m.m0.Mallocs
	runtime.GC()
	var m2 runtime.MemStats
	runtime.ReadMemStats(&m2)
	runtime.KeepAlive(keep)
	const mib = 1 << 20
	b.ReportMetric(float64(took.Milliseconds()), "ms")
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms")
	b.ReportMetric(float64(ecpu.Milliseconds()), "etcd-cpu-ms")
	b.ReportMetric(float64(m.allocBytes)/mib, "MiB-alloc")
	b.ReportMetric(float64(m.allocs), "allocs")
	b.ReportMetric(float64(m.peak)/mib, "peak-heap-MiB")
	b.ReportMetric(float64(m2.HeapAlloc)/mib, "live-heap-MiB")
	rss := peakRSS()
	if m.resetRSSHWM && rss > 0 {
		b.ReportMetric(float64(rss)/mib, "peak-RSS-MiB")
	}
	b.Logf("%s: %v (CPU: %v here, %v in etcd), %d MiB allocated in %d objects, heap peak %d MiB, live after %d MiB, peak RSS %d MiB",
		what, took.Round(time.Millisecond), cpu.Round(time.Millisecond), ecpu.Round(time.Millisecond), m.allocBytes/mib, m.allocs, m.peak/mib, m2.HeapAlloc/mib, rss/mib)
}

// peakRSS is VmHWM of /proc/self/status in bytes (0 if unknown).
func peakRSS() uint64 { return procPeakRSS(os.Getpid()) }

// procPeakRSS is a process's VmHWM in bytes (0 if unknown).
func procPeakRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startHelper runs this test binary as TestScaleHelperProcess in mode and returns the first
// line it prints. The etcd helper runs until the benchmark ends (its stdin closes); the
// flips helper is waited for.
func startHelper(b *testing.B, mode string, env []string) string {
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleHelperProcess$", "-test.timeout=0")
	dir := b.TempDir()
	cmd.Env = append(append(os.Environ(), "RESHARD_SCALE_HELPER="+mode, "RESHARD_SCALE_DIR="+dir), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	var got string
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "scale-helper: "); ok {
			got = v
			break
		}
	}
	if got == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		b.Fatalf("%s helper ended without saying anything", mode)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if mode == "etcd" {
		etcdPID = cmd.Process.Pid
		b.Cleanup(func() {
			stdin.Close()
			if err := waitOrKill(cmd, time.Minute); err != nil {
				b.Logf("etcd helper: %v", err)
			}
		})
		return got
	}
	stdin.Close()
	if err := waitOrKill(cmd, 10*time.Minute); err != nil {
		b.Fatalf("%s helper: %v", mode, err)
	}
	return got
}

func waitOrKill(cmd *exec.Cmd, limit time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		return fmt.Errorf("still running after %v: killed", limit)
	}
}

// TestScaleHelperProcess is BenchmarkCatalogScale's child process, not a test: it serves
// etcd, or makes the flips, and prints one line starting "scale-helper: ".
func TestScaleHelperProcess(t *testing.T) {
	switch os.Getenv("RESHARD_SCALE_HELPER") {
	case "etcd":
		serveEtcd(t)
	case "flips":
		makeFlips(t)
	default:
		t.Skip("the child process of BenchmarkCatalogScale")
	}
}

// serveEtcd runs etcd with its defaults (128 ops per txn, 1.5 MiB requests, 2 GiB quota)
// until stdin closes.
func serveEtcd(t *testing.T) {
	srv, err := etcdserver.Start(context.Background(), os.Getenv("RESHARD_SCALE_DIR"), etcdserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fmt.Printf("scale-helper: %s\n", srv.Endpoint())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// scaleStore is the measured catalog "scale" on the etcd at endpoint, through a client closed
// at cleanup.
func scaleStore(tb testing.TB, endpoint string) (*catalog.Store, *clientv3.Client) {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	s, err := catalog.NewStore(cli, "scale")
	if err != nil {
		tb.Fatal(err)
	}
	return s, cli
}

// makeFlips moves RESHARD_SCALE_FLIPS ranges, spread over the key line, each to the next
// shard: a journal, a freeze and a flip, as a cutover writes them. It prints the last
// revision and its mean milliseconds per Freeze and per Flip.
func makeFlips(t *testing.T) {
	ctx := context.Background()
	s, _ := scaleStore(t, os.Getenv("RESHARD_SCALE_ENDPOINT"))
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(os.Getenv("RESHARD_SCALE_FLIPS"))
	names := make([]string, 0, len(st.Shards))
	for name := range st.Shards {
		names = append(names, name)
	}
	var freeze, flip time.Duration
	for i := range n {
		r := st.Ranges[i*(len(st.Ranges)/n)]
		to := names[i%len(names)]
		if to == r.Shard {
			to = names[(i+1)%len(names)]
		}
		m := &catalog.Migration{ID: fmt.Sprintf("scale%d", i), Kind: catalog.KindMove, Range: r.Range, Source: r.Shard, Target: to, Phase: catalog.PhaseCatchingUp}
		if err := s.PutMigration(ctx, m); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := s.Freeze(ctx, st, r.Range.Lo, m); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := s.Flip(ctx, st, r.Range.Lo, m, to); err != nil {
			t.Fatal(err)
		}
		freeze, flip = freeze+t1.Sub(t0), flip+time.Since(t1)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	fmt.Printf("scale-helper: %d %.2f %.2f\n", st.Revision, ms(freeze), ms(flip))
}
