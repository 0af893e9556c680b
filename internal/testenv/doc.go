// Package testenv is the integration test harness: throwaway PostgreSQL clusters and an
// embedded etcd, started per test and torn down by t.Cleanup even when the test fails.
//
// Integration tests call Postgres and Etcd; with `go test -short` those skip, and
// otherwise a missing server binary is a test failure, never a silent skip.
package testenv
