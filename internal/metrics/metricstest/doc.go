// Package metricstest reads a Prometheus exposition the way a scraper does, for the tests
// of internal/metrics and of the commands that serve --metrics: one parser and one series
// lookup, so both check the same thing.
package metricstest
