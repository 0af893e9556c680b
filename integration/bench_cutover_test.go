package integration

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/migrate/migratetest"
)

// BenchmarkCutoverWindow measures the write-unavailability window of cutovers under a live
// write load: the time from the catalog freeze to the flip's commit, as a client of the
// catalog sees it. A stack of 3 shards holds the demo data (100 tenants, skewed); the load
// routes every transaction through the catalog resolver and retries on the fence error.
// Four tenants of moderate size (a few hundred to a few thousand rows over the five
// tables) are isolated into ranges of their own, and each is moved back and forth between
// two shards, one move at a time, with the real mover, catalog and executor: at least 24
// cutovers per run (RESHARD_BENCH_CUTOVERS raises it). The load runs as fast as its 4
// workers can, which saturates a small machine; RESHARD_BENCH_RATE caps it (transactions
// per second) to measure a busy but not saturated fleet. It reports the median, p99
// (nearest rank) and max window, logs the median of each cutover step, and checks
// afterwards that every acknowledged write is on its owner exactly once.
//
//	go test -run '^$' -bench CutoverWindow -benchtime 1x ./integration/
func BenchmarkCutoverWindow(b *testing.B) {
	ctx := context.Background()
	want := benchSetting(b, "RESHARD_BENCH_CUTOVERS", 24, 24)
	rate := benchSetting(b, "RESHARD_BENCH_RATE", 0.0, 0)
	s, ex, sample := timedStack(b, 3, demo.DataOptions{Tenants: 100, Scale: 0.5, Seed: 7})

	// The moving tenants: ranks 4, 8, 16 and 32 of 100 (the three heaviest are the hot ones).
	st := s.catalogNow(ctx)
	var movers []*benchTenant
	for _, rank := range []int{4, 8, 16, 32} {
		mv := s.benchTenant(st, s.tenants[rank-1])
		movers = append(movers, &mv)
		delete(s.quiet, mv.tenant.ID) // the moving tenants are written to while they move
	}
	var report strings.Builder
	for _, mv := range movers {
		fmt.Fprintf(&report, "tenant of rank %d: %d rows on %s, moves to %s and back\n",
			mv.tenant.Rank, tenantRows(b, s.conns[mv.home], mv.tenant.ID), mv.home, mv.away)
	}

	stopLoad := s.runLoad(4, rate, 7)
	time.Sleep(time.Second)

	var samples []cutoverSample
	var reruns []string
	b.ResetTimer()
	for range b.N {
		for n := 0; n < want; n++ {
			mv := movers[n%len(movers)]
			to := mv.away
			if n/len(movers)%2 == 1 {
				to = mv.home
			}
			id := fmt.Sprintf("bench_%d_%d", len(samples), mv.tenant.Rank)
			m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: mv.rng, Target: to})
			for attempt := 1; err != nil && attempt < 3; attempt++ {
				// A move that failed before its cutover says "re-run to resume", as an
				// operator would; the re-runs are reported, not hidden.
				reruns = append(reruns, fmt.Sprintf("%s: %v", id, err))
				m, err = ex.Move(ctx, migrate.MoveRequest{ID: id, Range: mv.rng, Target: to})
			}
			if err != nil {
				b.Fatalf("move %s %s -> %s: %v", id, mv.rng, to, err)
			}
			if m.Phase != catalog.PhaseDone {
				b.Fatalf("move %s ended %s", id, m.Phase)
			}
			sm := sample(id, m)
			if sm.window <= 0 {
				b.Fatalf("move %s: no window measured", id)
			}
			samples = append(samples, sm)
		}
	}
	result := stopBenchLoad(b, s, stopLoad)

	windows := make([]float64, len(samples))
	for i, sm := range samples {
		windows[i] = ms(sm.window)
	}
	b.ReportMetric(quantile(windows, 0.5), "window-p50-ms")
	b.ReportMetric(quantile(windows, 0.99), "window-p99-ms")
	b.ReportMetric(slices.Max(windows), "window-max-ms")
	b.ReportMetric(float64(len(samples)), "cutovers")
	fmt.Fprintf(&report, "load: %d transactions acknowledged (%.0f/s), %d fenced or frozen and retried, %d failed\n",
		result.Acked, float64(result.Acked)/result.Seconds, result.Fenced, result.Failed)
	for _, r := range reruns {
		fmt.Fprintf(&report, "re-ran a move after: %s\n", r)
	}
	if testing.Verbose() {
		for _, sm := range samples {
			fmt.Fprintf(&report, "%s: %d rows, window %.1fms:", sm.id, sm.rows, ms(sm.window))
			for _, st := range sm.steps {
				fmt.Fprintf(&report, " %s=%.1f", st.Step, ms(st.Duration))
			}
			report.WriteString("\n")
		}
	}
	report.WriteString(stepTable(samples))
	// The table is longer than the 10 lines a benchmark's log keeps.
	fmt.Print(report.String())
}

// benchSetting is the number in the environment variable name, or def when it is unset. A
// value the benchmark cannot use (not a number of T, or at most floor and not def) stops it
// at once with one line naming the variable: a typo must not run an hour-long benchmark
// with settings other than the ones asked for.
func benchSetting[T int | float64](b testing.TB, name string, def, floor T) T {
	b.Helper()
	raw, ok := os.LookupEnv(name)
	if !ok || raw == "" {
		return def
	}
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil || float64(T(v)) != v || (T(v) <= floor && T(v) != def) {
		kind := "number"
		if _, whole := any(def).(int); whole {
			kind = "whole number"
		}
		b.Fatalf("%s=%q: want a %s above %v, or unset for %v", name, raw, kind, floor, def)
	}
	return T(v)
}

// benchTenant is a tenant a benchmark moves back and forth, in a range of its own, between
// its home shard and away: s1, or s2 for a tenant on s1.
type benchTenant struct {
	tenant     demo.Tenant
	rng        catalog.KeyRange
	home, away string
}

// benchTenant carves t's range (st is the catalog before) and says where t moves.
func (s *stack) benchTenant(st *catalog.State, t demo.Tenant) benchTenant {
	owner, _ := st.Owner(t.ID)
	away := "s1"
	if owner.Shard == "s1" {
		away = "s2"
	}
	r := catalog.NewRange(t.ID, t.ID+1)
	s.carve(r)
	return benchTenant{tenant: t, rng: r, home: owner.Shard, away: away}
}

// cutoverSample is one cutover's window and the steps the executor logged for it.
type cutoverSample struct {
	id     string
	rows   int64
	window time.Duration
	steps  []cutover.StepTiming
}

// benchCheck is the end state check of the moves: a valid catalog with every range
// serving, balances equal ledgers on every shard, every acknowledged ledger write is
// present exactly once on its owner only, and every tenant's rows are as they should be
// (stack.checkTenants).
func benchCheck(b *testing.B, s *stack, res *demo.Result) {
	ctx := context.Background()
	st := migratetest.Catalog(b, ctx, s.store)
	for name, c := range s.conns {
		if err := demo.CheckBalances(ctx, c); err != nil {
			b.Errorf("shard %s: %v", name, err)
		}
	}
	s.checkTenants(ctx, st, res)
}

// stopBenchLoad ends a benchmark's timed part, then its load, after a moment for the last
// acknowledgements; a failed transaction fails b, and the end state is checked (benchCheck).
func stopBenchLoad(b *testing.B, s *stack, stopLoad func() *demo.Result) *demo.Result {
	b.StopTimer()
	time.Sleep(300 * time.Millisecond)
	result := stopLoad()
	if result.Failed > 0 {
		b.Fatalf("%d transactions of the load failed: %v", result.Failed, result.Errors)
	}
	benchCheck(b, s, result)
	return result
}

func tenantRows(b *testing.B, c *pgx.Conn, tenant int64) int64 {
	var total int64
	for _, t := range demo.Tables {
		var n int64
		if err := c.QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*) FROM %s WHERE tenant_id = $1`, pgx.Identifier{t}.Sanitize()), tenant).Scan(&n); err != nil {
			b.Fatal(err)
		}
		total += n
	}
	return total
}

// timedCatalog measures each migration's window from the start of its (last) freeze to the
// return of its flip; the open on the target that follows is added from the step log, and
// the sum is what a client holding writes for the range waits at most.
type timedCatalog struct {
	*catalog.Store
	mu      sync.Mutex
	frozeAt map[string]time.Time
	windows map[string]time.Duration
}

func (c *timedCatalog) Freeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error {
	c.mu.Lock()
	if c.frozeAt == nil {
		c.frozeAt, c.windows = map[string]time.Time{}, map[string]time.Duration{}
	}
	c.frozeAt[m.ID] = time.Now()
	c.mu.Unlock()
	return c.Store.Freeze(ctx, st, lo, m, opts...)
}

func (c *timedCatalog) Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, to string, opts ...catalog.WriteOption) error {
	err := c.Store.Flip(ctx, st, lo, m, to, opts...)
	if err == nil {
		c.mu.Lock()
		c.windows[m.ID] = time.Since(c.frozeAt[m.ID])
		c.mu.Unlock()
	}
	return err
}

func (c *timedCatalog) window(id string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.windows[id]
}

// timedStack is the window benchmarks' stack (newStack), its executor with its catalog
// writes timed and its steps logged, and sample, which reads a finished migration's
// cutover from them.
func timedStack(b *testing.B, shards int, opts demo.DataOptions) (*stack, *migrate.Executor, func(id string, m *catalog.Migration) cutoverSample) {
	b.Helper()
	s := newStack(b, shards, opts)
	cat := &timedCatalog{Store: s.store}
	steps := &stepLog{}
	ex := s.executor(migrate.ExecOptions{CutoverRetries: 3})
	ex.Catalog = cat
	ex.Log = slog.New(steps)
	return s, ex, func(id string, m *catalog.Migration) cutoverSample {
		sm := cutoverSample{id: id, rows: m.RowsVerified, steps: steps.take(id)}
		// The window ends once the target takes writes: the flip, then the open.
		sm.window = cat.window(id) + stepTook(sm.steps, "open")
		return sm
	}
}

// stepLog is a slog handler that keeps the step timings of each migration's "flipped"
// record (executor.go logs them as "freeze=1.2ms fence=0.8ms ...").
type stepLog struct {
	mu    sync.Mutex
	steps map[string][]cutover.StepTiming
}

var stepRE = regexp.MustCompile(`([a-z][a-z ]*)=([0-9.]+)ms`)

func (l *stepLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *stepLog) WithAttrs(as []slog.Attr) slog.Handler    { return &stepLogAttrs{l: l, attrs: as} }
func (l *stepLog) WithGroup(string) slog.Handler            { return l }

// stepLogAttrs is the stepLog of a logger With attributes (the executor's per-migration
// logger carries the migration's id so).
type stepLogAttrs struct {
	l     *stepLog
	attrs []slog.Attr
}

func (a *stepLogAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (a *stepLogAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &stepLogAttrs{l: a.l, attrs: append(slices.Clone(a.attrs), as...)}
}
func (a *stepLogAttrs) WithGroup(string) slog.Handler { return a }
func (a *stepLogAttrs) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(a.attrs...)
	return a.l.Handle(ctx, r)
}
func (l *stepLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "flipped" {
		return nil
	}
	var id, raw string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "migration":
			id = a.Value.String()
		case "steps":
			raw = a.Value.String()
		}
		return true
	})
	var out []cutover.StepTiming
	for _, m := range stepRE.FindAllStringSubmatch(raw, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		out = append(out, cutover.StepTiming{Step: strings.TrimSpace(m[1]), Duration: time.Duration(v * float64(time.Millisecond))})
	}
	l.mu.Lock()
	if l.steps == nil {
		l.steps = map[string][]cutover.StepTiming{}
	}
	l.steps[id] = out
	l.mu.Unlock()
	return nil
}

func (l *stepLog) take(id string) []cutover.StepTiming {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.steps[id]
}

func stepTook(steps []cutover.StepTiming, name string) time.Duration {
	for _, st := range steps {
		if st.Step == name {
			return st.Duration
		}
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile is the nearest-rank quantile q of xs (with fewer than 100 samples, p99 is the max).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// stepTable is the median, p99 and max of each step, in the order the cutover runs them,
// and of the whole window.
func stepTable(samples []cutoverSample) string {
	var order []string
	per := map[string][]float64{}
	var windows, rows []float64
	for _, sm := range samples {
		windows = append(windows, ms(sm.window))
		rows = append(rows, float64(sm.rows))
		for _, st := range sm.steps {
			if _, ok := per[st.Step]; !ok {
				order = append(order, st.Step)
			}
			per[st.Step] = append(per[st.Step], ms(st.Duration))
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d cutovers, %.0f rows verified (median, %.0f max)\n", len(samples), quantile(rows, 0.5), slices.Max(rows))
	fmt.Fprintf(&sb, "%-12s %8s %8s %8s\n", "step", "p50 ms", "p99 ms", "max ms")
	for _, name := range order {
		v := per[name]
		fmt.Fprintf(&sb, "%-12s %8.1f %8.1f %8.1f\n", name, quantile(v, 0.5), quantile(v, 0.99), slices.Max(v))
	}
	fmt.Fprintf(&sb, "%-12s %8.1f %8.1f %8.1f\n", "window", quantile(windows, 0.5), quantile(windows, 0.99), slices.Max(windows))
	return sb.String()
}

// BenchmarkCutoverWindowBySize measures the write-unavailability window of ranges of 10k,
// 100k and 1M rows under the same live write load, side by side: three busy tenants of a
// 2-shard demo stack are grown (server-side) to those sizes and each moves back and forth
// RESHARD_BENCH_SIZE_MOVES times (default 4), one move at a time, with the real mover,
// catalog and executor. The whole range is verified online before each freeze; the window
// compares only the rows changed since. Per size it reports the window's median, p99
// (nearest rank: the max below 100 samples) and max, the predicted window's median, the
// rows compared in the window and the online verify's duration, then each size's step
// table; afterwards every tenant's rows on every shard are checked. The load runs at
// RESHARD_BENCH_RATE transactions per second (default 200) over 4 workers.
//
//	go test -run '^$' -bench CutoverWindowBySize -benchtime 1x -timeout 60m ./integration/
func BenchmarkCutoverWindowBySize(b *testing.B) {
	ctx := context.Background()
	moves := benchSetting(b, "RESHARD_BENCH_SIZE_MOVES", 4, 0)
	rate := benchSetting(b, "RESHARD_BENCH_RATE", 200.0, 0)
	s, ex, sample := timedStack(b, 2, demo.DataOptions{Tenants: 20, Scale: 0.1, Seed: 13})

	st, err := s.store.Load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	type sized struct {
		rows int
		benchTenant
		samples   []cutoverSample
		predicted []float64
		compared  []float64
		online    []float64
	}
	sizes := []*sized{{rows: 10_000}, {rows: 100_000}, {rows: 1_000_000}}
	for i, sz := range sizes {
		sz.benchTenant = s.benchTenant(st, s.tenants[i+1]) // ranks 2-4: busy, never quiet
		have := tenantRows(b, s.conns[sz.home], sz.tenant.ID)
		if _, err := s.conns[sz.home].Exec(ctx, `INSERT INTO events (tenant_id, created_at, kind, payload)
			SELECT $1, now() - (g % 3600) * interval '1 second', 'bulk', jsonb_build_object('g', g)
			FROM generate_series(1, $2::int) g`, sz.tenant.ID, max(0, int64(sz.rows)-have)); err != nil {
			b.Fatal(err)
		}
	}
	if s.before, err = demo.TakeSnapshot(ctx, s.queriers(), demo.Tables); err != nil {
		b.Fatal(err)
	}
	stopLoad := s.runLoad(4, rate, 13)
	time.Sleep(time.Second)

	b.ResetTimer()
	for range b.N {
		for n := 0; n < moves; n++ {
			for _, sz := range sizes {
				to := sz.away
				if n%2 == 1 {
					to = sz.home
				}
				id := fmt.Sprintf("size_%d_%d", sz.rows, n)
				m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: sz.rng, Target: to})
				if err != nil {
					b.Fatalf("move %s: %v", id, err)
				}
				sm := sample(id, m)
				sz.samples = append(sz.samples, sm)
				if v := m.Verify; v != nil {
					sz.predicted = append(sz.predicted, v.PredictedWindow*1000)
					sz.compared = append(sz.compared, float64(v.WindowRows))
					sz.online = append(sz.online, v.OnlineSeconds)
				}
			}
		}
	}
	result := stopBenchLoad(b, s, stopLoad)

	var report strings.Builder
	fmt.Fprintf(&report, "load: %d transactions acknowledged (%.0f/s), %d fenced or frozen and retried\n",
		result.Acked, float64(result.Acked)/result.Seconds, result.Fenced)
	fmt.Fprintf(&report, "%10s %5s %9s %9s %9s %13s %14s %10s\n", "rows", "moves", "p50 ms", "p99 ms", "max ms", "predicted p50", "compared p50", "online s")
	for _, sz := range sizes {
		w := make([]float64, len(sz.samples))
		for i, sm := range sz.samples {
			w[i] = ms(sm.window)
		}
		fmt.Fprintf(&report, "%10d %5d %9.1f %9.1f %9.1f %13.1f %14.0f %10.2f\n", sz.rows, len(w), quantile(w, 0.5), quantile(w, 0.99),
			slices.Max(w), quantile(sz.predicted, 0.5), quantile(sz.compared, 0.5), quantile(sz.online, 0.5))
		b.ReportMetric(quantile(w, 0.99), fmt.Sprintf("window-p99-ms-%dk", sz.rows/1000))
	}
	for _, sz := range sizes {
		fmt.Fprintf(&report, "\n%d rows: ", sz.rows)
		report.WriteString(stepTable(sz.samples))
	}
	fmt.Print(report.String())
}
