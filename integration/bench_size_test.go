package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/migrate"
)

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
	moves := 4
	if v, err := strconv.Atoi(os.Getenv("RESHARD_BENCH_SIZE_MOVES")); err == nil && v > 0 {
		moves = v
	}
	rate := 200.0
	if v, err := strconv.ParseFloat(os.Getenv("RESHARD_BENCH_RATE"), 64); err == nil && v > 0 {
		rate = v
	}
	s := newStack(b, 2, demo.DataOptions{Tenants: 20, Scale: 0.1, Seed: 13})
	ex, sample := s.timedExecutor()

	st, err := s.store.Load(ctx)
	if err != nil {
		b.Fatal(err)
	}
	type sized struct {
		rows       int
		tenant     demo.Tenant
		rng        catalog.KeyRange
		home, away string
		samples    []cutoverSample
		predicted  []float64
		compared   []float64
		online     []float64
	}
	sizes := []*sized{{rows: 10_000}, {rows: 100_000}, {rows: 1_000_000}}
	for i, sz := range sizes {
		sz.tenant = s.tenants[i+1] // ranks 2-4: busy, never quiet
		owner, _ := st.Owner(sz.tenant.ID)
		sz.home, sz.away = owner.Shard, map[string]string{"s1": "s2", "s2": "s1"}[owner.Shard]
		have := tenantRows(b, s.conns[sz.home], sz.tenant.ID)
		if _, err := s.conns[sz.home].Exec(ctx, `INSERT INTO events (tenant_id, created_at, kind, payload)
			SELECT $1, now() - (g % 3600) * interval '1 second', 'bulk', jsonb_build_object('g', g)
			FROM generate_series(1, $2::int) g`, sz.tenant.ID, max(0, int64(sz.rows)-have)); err != nil {
			b.Fatal(err)
		}
		sz.rng = catalog.NewRange(sz.tenant.ID, sz.tenant.ID+1)
		s.carve(sz.rng)
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
