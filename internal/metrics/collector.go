package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// The per-migration series are made at each scrape from what Metrics holds, so that a
// value read from a journal can be set as it is (a counter of a resumed copy starts where
// its journal says) and a migration's series keep its labels from its first report on.
var (
	migrationLabels = []string{"id", "range", "source", "target"}
	descPhase       = prometheus.NewDesc("reshard_migration_phase",
		"1 for each migration, labelled with its current phase (planned, preflight, copying, catching_up, frozen, verifying, flipped, cleaning_up, done, rolling_back, rolled_back, cancelled).",
		append(migrationLabels, "phase"), nil)
	descRows = prometheus.NewDesc("reshard_migration_copied_rows_total",
		"Rows the migration's copy has copied to the target.", migrationLabels, nil)
	descBytes = prometheus.NewDesc("reshard_migration_copied_bytes_total",
		"Bytes the migration's copy has copied to the target (COPY binary format).", migrationLabels, nil)
	descLagBytes = prometheus.NewDesc("reshard_migration_apply_lag_bytes",
		"WAL the migration's catch-up has yet to apply on the target (0 before the catch-up and after the flip).", migrationLabels, nil)
	descLagSeconds = prometheus.NewDesc("reshard_migration_apply_lag_seconds",
		"Age of the oldest source change the migration's catch-up has yet to apply.", migrationLabels, nil)
	descApplied = prometheus.NewDesc("reshard_migration_applied_transactions_total",
		"Source transactions the migration's catch-up has applied on the target, as counted by this process.", migrationLabels, nil)
)

// migrationCollector serves the per-migration series of its Metrics.
type migrationCollector struct{ m *Metrics }

func (c migrationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPhase, descRows, descBytes, descLagBytes, descLagSeconds, descApplied} {
		ch <- d
	}
}

func (c migrationCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	ids := make([]string, 0, len(c.m.migrations))
	for id := range c.m.migrations {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		g := c.m.migrations[id]
		l := g.labels
		ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, 1, append(append([]string{}, l...), g.phase)...)
		ch <- prometheus.MustNewConstMetric(descRows, prometheus.CounterValue, float64(g.rows), l...)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(g.bytes), l...)
		ch <- prometheus.MustNewConstMetric(descLagBytes, prometheus.GaugeValue, float64(g.lagBytes), l...)
		ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, g.lagSeconds, l...)
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.CounterValue, float64(g.appliedTxs), l...)
	}
}
