// Package integration holds the end-to-end tests of reshard: real PostgreSQL 15 clusters
// and a real etcd (started by internal/testenv), the demo schema and write load of
// internal/demo, the catalog, the mover and the cutover working together. Its tests claim
// that data moved, so nothing in them is a mock.
package integration
