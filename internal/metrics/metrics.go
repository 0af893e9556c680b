package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/mover"
)

// Outcomes of a migration for reshard_migrations_finished_total: the three ways a journal
// ends, and failed: the driver stopped with an error before its migration ended (a re-run
// resumes it).
const (
	OutcomeDone       = catalog.PhaseDone
	OutcomeRolledBack = catalog.PhaseRolledBack
	OutcomeCancelled  = catalog.PhaseCancelled
	OutcomeFailed     = "failed"
)

// windowBuckets span a cutover window and its steps: 1 ms to about 16 s, doubling.
var windowBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// Metrics is one process's registry. Its methods are safe for concurrent use and cheap:
// they are called from the mover's progress and from journal writes.
type Metrics struct {
	reg *prometheus.Registry

	mu         sync.Mutex
	migrations map[string]*migration

	window   prometheus.Histogram
	steps    *prometheus.HistogramVec
	finished *prometheus.CounterVec
	runway   *prometheus.GaugeVec
	runAt    prometheus.Gauge
	runTook  prometheus.Gauge
	runOK    *prometheus.GaugeVec
}

// migration is what is known of one migration, from its journal and its mover's progress.
type migration struct {
	labels     []string // id, range, source, target
	phase      string
	rows       int64
	bytes      int64
	lagBytes   int64
	lagSeconds float64
	appliedTxs int64
	cutOver    bool // its window has been observed
	unflipped  bool // seen in a phase before the flip
}

// New makes an empty registry with reshard's metrics and the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:        prometheus.NewRegistry(),
		migrations: map[string]*migration{},
		window: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reshard_cutover_window_seconds",
			Help: "Cutover windows: freeze to the target open, the range's write-unavailability.", Buckets: windowBuckets}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "reshard_cutover_step_seconds",
			Help: "Steps of the cutover windows (freeze, fence, drain, catch-up, verify, sequences, flip, open).", Buckets: windowBuckets}, []string{"step"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reshard_migrations_finished_total",
			Help: "Migrations this process saw end, by outcome: done, rolled_back, cancelled, or failed (its driver stopped with an error; a re-run resumes it)."}, []string{"outcome"}),
		runway: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reshard_partition_runway_periods",
			Help: "Premade partition periods left after the current one, per shard and table, as of the scheduler's last run."}, []string{"shard", "table"}),
		runAt: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reshard_scheduler_last_run_timestamp_seconds",
			Help: "When the partition scheduler's last run started (Unix time)."}),
		runTook: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reshard_scheduler_last_run_duration_seconds",
			Help: "How long the partition scheduler's last run took."}),
		runOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "reshard_scheduler_last_run_outcome",
			Help: "1 for the outcome of the partition scheduler's last run (ok, errors, failed, idle), 0 for the others."}, []string{"outcome"}),
	}
	for _, o := range []string{OutcomeDone, OutcomeRolledBack, OutcomeCancelled, OutcomeFailed} {
		m.finished.WithLabelValues(o) // every outcome shows, at 0 until one happens
	}
	m.reg.MustRegister(migrationCollector{m}, m.window, m.steps, m.finished, m.runway, m.runAt, m.runTook, m.runOK,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry to serve (Handler) or to gather in a test.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// phaseOrder ranks the phases a migration goes through, so that a late progress report
// never moves its phase back.
var phaseOrder = []string{catalog.PhasePlanned, catalog.PhasePreflight, catalog.PhaseCopying, catalog.PhaseCatchingUp,
	catalog.PhaseFrozen, catalog.PhaseVerifying, catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone}

// Migration takes a journal record as a driver (or the status page) read or wrote it: its
// labels, phase, copy counters and lag. A record that ends the migration (done, rolled
// back, cancelled), after one seen unfinished, counts in reshard_migrations_finished_total.
func (m *Metrics) Migration(rec *catalog.Migration) {
	if m == nil || rec == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, seen := m.migrations[rec.ID]
	if !seen {
		g = &migration{}
		m.migrations[rec.ID] = g
	}
	g.labels = []string{rec.ID, rec.Range.String(), rec.Source, rec.Target}
	if seen && g.phase != "" && !terminal(g.phase) && terminal(rec.Phase) {
		m.finished.WithLabelValues(rec.Phase).Inc()
	}
	g.phase = rec.Phase
	if r := rank(rec.Phase); r >= 0 && r < rank(catalog.PhaseFlipped) {
		g.unflipped = true
	}
	// Counters only grow within a process: a checkpoint may be older than the last progress.
	g.rows, g.bytes = max(g.rows, rec.RowsCopied), max(g.bytes, rec.BytesCopied)
	if rec.Phase == catalog.PhaseCopying || rec.Phase == catalog.PhaseCatchingUp {
		g.lagBytes, g.lagSeconds = rec.LagBytes, rec.LagSeconds
	}
}

// Watched takes a journal record as a watcher of the catalog sees it (the status page
// follows every migration), as Migration does; and a migration seen before its flip and
// now cleaning up or done has its cutover window observed, as a driver's CutOver does.
func (m *Metrics) Watched(rec *catalog.Migration) {
	if m == nil || rec == nil {
		return
	}
	m.Migration(rec)
	m.mu.Lock()
	cutOver := m.migrations[rec.ID].unflipped && (rec.Phase == catalog.PhaseCleaningUp || rec.Phase == catalog.PhaseDone)
	m.mu.Unlock()
	if cutOver {
		m.CutOver(rec)
	}
}

// Progress takes a mover's progress report of a migration Migration has seen (the
// executor shows the mover its journal first).
func (m *Metrics) Progress(p mover.Progress) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.migrations[p.ID]
	if !ok {
		return
	}
	if rank(p.Phase) > rank(g.phase) {
		g.phase = p.Phase
	}
	switch p.Phase {
	case catalog.PhaseCopying:
		g.rows, g.bytes = max(g.rows, p.RowsCopied), max(g.bytes, p.BytesCopied)
	case catalog.PhaseCatchingUp:
		g.lagBytes, g.lagSeconds = p.LagBytes, p.LagSeconds
		g.appliedTxs = max(g.appliedTxs, p.AppliedTxs)
	}
}

// CutOver observes the cutover window and its steps of a migration that has just flipped
// and opened on its target (rec.Timings: cutover_window and window), once per migration.
func (m *Metrics) CutOver(rec *catalog.Migration) {
	if m == nil || rec == nil || rec.Timings.CutoverWindow <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g, ok := m.migrations[rec.ID]; ok {
		if g.cutOver {
			return
		}
		g.cutOver = true
		// After the flip nothing is caught up any more: the apply has stopped.
		g.lagBytes, g.lagSeconds = 0, 0
	}
	m.window.Observe(rec.Timings.CutoverWindow)
	for _, s := range rec.Timings.Window {
		m.steps.WithLabelValues(s.Step).Observe(s.Seconds)
	}
}

// Failed counts a driver's run of a migration that stopped with an error before the
// migration ended.
func (m *Metrics) Failed(rec *catalog.Migration) {
	if m == nil || rec == nil || terminal(rec.Phase) {
		return
	}
	m.finished.WithLabelValues(OutcomeFailed).Inc()
}

// PartitionRun takes the partition scheduler's last run: each shard's tables' runway, and
// the run's time, duration and outcome.
func (m *Metrics) PartitionRun(run catalog.PartitionRun) {
	if m == nil {
		return
	}
	m.runway.Reset()
	for _, sh := range run.Shards {
		for _, t := range sh.Tables {
			m.runway.WithLabelValues(sh.Shard, t.Table).Set(float64(t.Runway))
		}
	}
	m.runAt.Set(float64(run.Time.UnixNano()) / 1e9)
	m.runTook.Set(run.Seconds)
	for _, o := range []string{catalog.PartitionRunOK, catalog.PartitionRunErrors, catalog.PartitionRunFailed, catalog.PartitionRunIdle} {
		v := 0.0
		if o == run.Outcome {
			v = 1
		}
		m.runOK.WithLabelValues(o).Set(v)
	}
}

func terminal(phase string) bool {
	return phase == catalog.PhaseDone || phase == catalog.PhaseRolledBack || phase == catalog.PhaseCancelled
}

func rank(phase string) int { return slices.Index(phaseOrder, phase) }
