package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics/metricstest"
	"github.com/reshard/reshard/internal/testenv"
)

// scrapeMetrics reads url's exposition with Prometheus's text parser; nil while nothing
// answers there yet.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return metricstest.Parse(t, string(body))
}

// TestMetricsFollowARealMove: `move --metrics` serves /metrics while it runs. Scraped
// during a real move (its copy throttled, the driver held once caught up and again after
// the cutover): the move's copied rows rise, its lag series is there, and after the
// cutover the window histogram has one observation and each step's one; the exposition
// parses with Prometheus's text parser. The move then ends, every tenant where it belongs.
func TestMetricsFollowARealMove(t *testing.T) {
	env, pgs := moveFleet(t, "metrics")
	ctx := testContext(t, 4*time.Minute)
	// About 2 MB more for the range, so that a copy at 200 kB/s takes seconds.
	pgs["s1"].Exec(ctx, `INSERT INTO orders SELECT 1 + g % 49, 1000 + g, repeat('x', 200) FROM generate_series(1, 10000) g`)
	before := map[string]string{}
	for name, pg := range pgs {
		before[name] = shardState(t, ctx, pg)
	}
	hold := filepath.Join(t.TempDir(), "hold")
	for _, step := range []string{"catch-up", "cleanup"} {
		writeFile(t, filepath.Dir(hold), "hold."+step, "")
	}
	t.Setenv("RESHARD_TEST_HOLD", "catch-up,cleanup")
	t.Setenv("RESHARD_TEST_HOLD_FILE", hold)
	addr := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	url := "http://" + addr + "/metrics"
	done := make(chan cliResult, 1)
	go func() {
		done <- runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "metrics", "move", "--id", "mmet", "--range", "1:50", "--to", "s2",
			"--max-rate", "200kB", "--metrics", addr)
	}()
	mig := map[string]string{"id": "mmet", "range": "1:50", "source": "s1", "target": "s2"}
	phase := func(fams map[string]*dto.MetricFamily, p string) bool {
		_, ok := metricstest.Value(fams, "reshard_migration_phase", map[string]string{"id": "mmet", "phase": p})
		return ok
	}
	// waitFor scrapes until ok says so, calling seen with each scrape.
	waitFor := func(what string, ok func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
		t.Helper()
		for ctx.Err() == nil {
			select {
			case res := <-done:
				t.Fatalf("the move ended while waiting for %s: exit %d\n%s%s", what, res.code, res.stdout, res.stderr)
			default:
			}
			if fams := scrapeMetrics(t, url); fams != nil && ok(fams) {
				return fams
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("no %s before the deadline", what)
		return nil
	}

	var rows []float64
	fams := waitFor("a caught-up move", func(fams map[string]*dto.MetricFamily) bool {
		if v, ok := metricstest.Value(fams, "reshard_migration_copied_rows_total", mig); ok && (len(rows) == 0 || v != rows[len(rows)-1]) {
			rows = append(rows, v)
		}
		return phase(fams, "catching_up")
	})
	if !slices.IsSorted(rows) || len(slices.Compact(slices.Clone(rows))) < 3 || rows[len(rows)-1] < 10000 {
		t.Errorf("copied rows seen %v: want them rising through at least three values to the range's 10000+", rows)
	}
	if _, ok := metricstest.Value(fams, "reshard_migration_apply_lag_bytes", mig); !ok {
		t.Error("no apply lag (bytes) of the caught-up move")
	}
	if _, ok := metricstest.Value(fams, "reshard_migration_apply_lag_seconds", mig); !ok {
		t.Error("no apply lag (seconds) of the caught-up move")
	}
	if n, _ := metricstest.Value(fams, "reshard_cutover_window_seconds", nil); n != 0 {
		t.Errorf("%v cutover windows observed before the cutover", n)
	}
	os.Remove(hold + ".catch-up")

	fams = waitFor("a cutover window", func(fams map[string]*dto.MetricFamily) bool {
		n, _ := metricstest.Value(fams, "reshard_cutover_window_seconds", nil)
		return n > 0
	})
	if n, _ := metricstest.Value(fams, "reshard_cutover_window_seconds", nil); n != 1 {
		t.Errorf("%v cutover windows observed, want 1", n)
	}
	for _, step := range []string{"freeze", "fence", "drain", "catch-up", "verify", "sequences", "flip", "open"} {
		if n, _ := metricstest.Value(fams, "reshard_cutover_step_seconds", map[string]string{"step": step}); n != 1 {
			t.Errorf("step %s: %v observations, want 1", step, n)
		}
	}
	if !phase(fams, "flipped") {
		t.Errorf("phase after the cutover: %v", fams["reshard_migration_phase"])
	}
	os.Remove(hold + ".cleanup")

	res := <-done
	if res.code != 0 {
		t.Fatalf("move: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "window steps: freeze") {
		t.Errorf("the report lacks the window's steps:\n%s", res.stdout)
	}
	m, err := env.store.GetMigration(ctx, "mmet")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Timings.Window) != 8 {
		t.Errorf("journal of the done move: window steps %+v, want 8", m.Timings.Window)
	}
	checkMoved(t, ctx, before, pgs, 1, 50, "s1", "s2")
}

// checkMoved checks every tenant of every shard after a move of tenants [lo, hi) from src
// to dst: each moved one is on dst only, with the rows and hash it had on src; every other
// one is where it was, unchanged.
func checkMoved(t *testing.T, ctx context.Context, before map[string]string, pgs map[string]*testenv.PG, lo, hi int64, src, dst string) {
	t.Helper()
	after := map[string]map[string]string{}
	for name, pg := range pgs {
		after[name] = tenantEntries(shardState(t, ctx, pg))
	}
	moved := func(key string) bool {
		_, tenant, _ := strings.Cut(key, "/")
		var k int64
		fmt.Sscan(tenant, &k)
		return k >= lo && k < hi
	}
	for name := range pgs {
		for key, want := range tenantEntries(before[name]) {
			switch {
			case moved(key) && name == src:
				if got, ok := after[src][key]; ok {
					t.Errorf("%s: %s still on %s (%s)", name, key, src, got)
				}
				if got := after[dst][key]; got != want {
					t.Errorf("%s on %s: %q, want %q as on %s before", key, dst, got, want, src)
				}
			case !moved(key):
				if got := after[name][key]; got != want {
					t.Errorf("%s on %s (not moved): %q, want %q", key, name, got, want)
				}
			}
		}
		for key := range after[name] {
			if _, was := tenantEntries(before[name])[key]; !was && !(moved(key) && name == dst) {
				t.Errorf("%s appeared on %s", key, name)
			}
		}
	}
}

// TestUIServesTheCatalogsMetrics: `reshard ui --metrics` serves what the page shows, from
// the catalog alone: a migration's phase and copied rows from its journal, each shard's
// partition runway and the scheduler's last run; a journal change reaches the metrics.
func TestUIServesTheCatalogsMetrics(t *testing.T) {
	env := catalogOnly(t)
	ctx := testContext(t, 2*time.Minute)
	m := &catalog.Migration{ID: "mui", Kind: catalog.KindMove, Range: catalog.NewRange(5, 10), Source: "s1", Target: "s2",
		Phase: catalog.PhaseCopying, RowsCopied: 1234}
	if err := env.store.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	leader, err := env.store.Campaign(ctx, "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	run := catalog.PartitionRun{Time: time.Now().UTC(), Seconds: 0.5, Outcome: catalog.PartitionRunOK,
		Shards: []catalog.PartitionShardRun{{Shard: "s1", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 7}}}}}
	if err := env.store.PutPartitionRun(ctx, leader, run); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	uictx, stop := context.WithCancel(ctx)
	done := make(chan cliResult, 1)
	go func() {
		done <- runCLI(t, uictx, append(env.global, "ui", "--listen", "127.0.0.1:0", "--metrics", addr)...)
	}()
	scrapeUntil := func(what string, ok func(map[string]*dto.MetricFamily) bool) {
		t.Helper()
		for ctx.Err() == nil {
			if fams := scrapeMetrics(t, "http://"+addr+"/metrics"); fams != nil && ok(fams) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("never served %s", what)
	}
	mig := map[string]string{"id": "mui", "range": "5:10", "source": "s1", "target": "s2"}
	scrapeUntil("the migration and the runway", func(fams map[string]*dto.MetricFamily) bool {
		rows, _ := metricstest.Value(fams, "reshard_migration_copied_rows_total", mig)
		_, copying := metricstest.Value(fams, "reshard_migration_phase", map[string]string{"id": "mui", "phase": "copying"})
		runway, _ := metricstest.Value(fams, "reshard_partition_runway_periods", map[string]string{"shard": "s1", "table": "events"})
		ok, _ := metricstest.Value(fams, "reshard_scheduler_last_run_outcome", map[string]string{"outcome": "ok"})
		return rows == 1234 && copying && runway == 7 && ok == 1
	})
	m.Phase, m.RowsCopied = catalog.PhaseCatchingUp, 2000
	if err := env.store.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	scrapeUntil("the journal's change", func(fams map[string]*dto.MetricFamily) bool {
		rows, _ := metricstest.Value(fams, "reshard_migration_copied_rows_total", mig)
		_, catching := metricstest.Value(fams, "reshard_migration_phase", map[string]string{"id": "mui", "phase": "catching_up"})
		return rows == 2000 && catching
	})
	stop()
	if res := <-done; res.code != 0 {
		t.Errorf("reshard ui: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}
