package metrics

import (
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics/metricstest"
	"github.com/reshard/reshard/mover"
)

// scrape reads the handler's exposition as a scraper does.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return metricstest.Parse(t, rec.Body.String())
}

func rec(id, phase string, rows int64) *catalog.Migration {
	return &catalog.Migration{ID: id, Range: catalog.NewRange(1, 50), Source: "s1", Target: "s2", Phase: phase, RowsCopied: rows}
}

// TestMetricsFollowMigrations: the per-migration series carry id, range, source and target;
// the copied rows never go back within a process (a checkpoint may be older than the last
// progress report); a migration seen unfinished and then ended counts once by its outcome,
// one first seen ended counts nothing; a failed run counts; a cutover is observed once.
func TestMetricsFollowMigrations(t *testing.T) {
	m := New()
	m.Migration(rec("m1", catalog.PhaseCopying, 0))
	m.Progress(mover.Progress{ID: "m1", Phase: catalog.PhaseCopying, RowsCopied: 100, BytesCopied: 4096})
	m.Migration(rec("m1", catalog.PhaseCopying, 50))
	m.Progress(mover.Progress{ID: "m1", Phase: catalog.PhaseCatchingUp, LagBytes: 300, LagSeconds: 0.5, AppliedTxs: 7})
	m.Progress(mover.Progress{ID: "unknown", Phase: catalog.PhaseCopying, RowsCopied: 1})
	labels := map[string]string{"id": "m1", "range": "1:50", "source": "s1", "target": "s2"}
	fams := scrape(t, m)
	for name, want := range map[string]float64{
		"reshard_migration_copied_rows_total": 100, "reshard_migration_copied_bytes_total": 4096,
		"reshard_migration_apply_lag_bytes": 300, "reshard_migration_apply_lag_seconds": 0.5,
		"reshard_migration_applied_transactions_total": 7,
	} {
		if got, ok := metricstest.Value(fams, name, labels); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := metricstest.Value(fams, "reshard_migration_phase", map[string]string{"id": "m1", "phase": catalog.PhaseCatchingUp}); !ok {
		t.Error("no phase catching_up for m1")
	}
	if _, ok := metricstest.Value(fams, "reshard_migration_copied_rows_total", map[string]string{"id": "unknown"}); ok {
		t.Error("progress of a migration never seen in a journal made a series without its labels")
	}

	done := rec("m1", catalog.PhaseCleaningUp, 100)
	done.Timings = catalog.Timings{CutoverWindow: 0.05, Window: []catalog.WindowStep{{Step: "freeze", Seconds: 0.004}, {Step: "flip", Seconds: 0.003}}}
	m.CutOver(done)
	m.CutOver(done)
	done.Phase = catalog.PhaseDone
	m.Migration(done)
	m.Migration(done)
	m.Migration(rec("m2", catalog.PhaseRolledBack, 0)) // first seen ended
	m.Migration(rec("m3", catalog.PhaseCopying, 0))
	m.Failed(rec("m3", catalog.PhaseCopying, 0))
	m.Failed(rec("m2", catalog.PhaseRolledBack, 0))
	fams = scrape(t, m)
	metricstest.Expect(t, fams, []metricstest.Series{
		{Name: "reshard_migrations_finished_total", Labels: map[string]string{"outcome": "done"}, Want: 1},
		{Name: "reshard_migrations_finished_total", Labels: map[string]string{"outcome": "rolled_back"}, Want: 0},
		{Name: "reshard_migrations_finished_total", Labels: map[string]string{"outcome": "cancelled"}, Want: 0},
		{Name: "reshard_migrations_finished_total", Labels: map[string]string{"outcome": "failed"}, Want: 1},
		{Name: "reshard_cutover_window_seconds", Labels: nil, Want: 1},
		{Name: "reshard_cutover_step_seconds", Labels: map[string]string{"step": "freeze"}, Want: 1},
		{Name: "reshard_cutover_step_seconds", Labels: map[string]string{"step": "flip"}, Want: 1},
		{Name: "reshard_migration_apply_lag_bytes", Labels: labels, Want: 0},
	})
}

// TestMetricsShowThePartitionRun: runway per shard and table, and the last run's time,
// duration and outcome (1 for it, 0 for the others).
func TestMetricsShowThePartitionRun(t *testing.T) {
	m := New()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m.PartitionRun(catalog.PartitionRun{Time: at, Seconds: 1.5, Outcome: catalog.PartitionRunErrors, Shards: []catalog.PartitionShardRun{
		{Shard: "s1", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 6}}},
		{Shard: "s2", Tables: []catalog.PartitionTableRun{{Table: "events", Runway: 2}}}}})
	fams := scrape(t, m)
	metricstest.Expect(t, fams, []metricstest.Series{
		{Name: "reshard_partition_runway_periods", Labels: map[string]string{"shard": "s1", "table": "events"}, Want: 6},
		{Name: "reshard_partition_runway_periods", Labels: map[string]string{"shard": "s2", "table": "events"}, Want: 2},
		{Name: "reshard_scheduler_last_run_timestamp_seconds", Labels: nil, Want: float64(at.Unix())},
		{Name: "reshard_scheduler_last_run_duration_seconds", Labels: nil, Want: 1.5},
		{Name: "reshard_scheduler_last_run_outcome", Labels: map[string]string{"outcome": "errors"}, Want: 1},
		{Name: "reshard_scheduler_last_run_outcome", Labels: map[string]string{"outcome": "ok"}, Want: 0},
	})
}

// TestWatchedMigrationsObserveTheirWindow: a watcher (the status page) that saw a migration
// before its flip observes its window once it is cleaning up or done; one first seen done
// (before the watcher started) adds no observation and no outcome.
func TestWatchedMigrationsObserveTheirWindow(t *testing.T) {
	m := New()
	win := catalog.Timings{CutoverWindow: 0.04, Window: []catalog.WindowStep{{Step: "verify", Seconds: 0.02}}}
	old := rec("old", catalog.PhaseDone, 10)
	old.Timings = win
	m.Watched(old)
	for _, phase := range []string{catalog.PhaseCatchingUp, catalog.PhaseFrozen, catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone} {
		r := rec("new", phase, 10)
		r.Timings = win
		m.Watched(r)
	}
	fams := scrape(t, m)
	if n, _ := metricstest.Value(fams, "reshard_cutover_window_seconds", nil); n != 1 {
		t.Errorf("%v windows observed, want 1", n)
	}
	if n, _ := metricstest.Value(fams, "reshard_cutover_step_seconds", map[string]string{"step": "verify"}); n != 1 {
		t.Errorf("%v verify steps observed, want 1", n)
	}
	if n, _ := metricstest.Value(fams, "reshard_migrations_finished_total", map[string]string{"outcome": "done"}); n != 1 {
		t.Errorf("%v done, want 1", n)
	}
}
