// Package metrics is what reshard's long-running commands (move, split --to, apply,
// schedule, ui) serve to Prometheus on --metrics ADDR at /metrics: each migration's phase,
// copy, lag and applied transactions, the cutover windows and their steps, migrations
// finished by outcome, and the partition scheduler's runway and last run. docs/metrics.md
// lists every metric.
package metrics
