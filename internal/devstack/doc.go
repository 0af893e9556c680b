// Package devstack runs the local stack behind `reshard dev up|down|status|load|check`: N
// PostgreSQL clusters (the shards, made by internal/pgcluster) and an etcd (a detached
// `reshard dev etcd` process embedding internal/etcdserver), all in one folder, with the
// demo application's schema and data (internal/demo) on the shards.
//
// The folder's state.json says what runs where; it is written before anything starts and
// updated as parts come up, so Down can stop a half-started stack. Load runs the demo's
// write load routed by the catalog (or the ranges the stack was made with) and records what
// its acknowledged transactions did; Check compares every tenant's rows on every shard with
// a fingerprint Save took before the load and the moves. docs/dev.md describes the folder
// and each command; cmd/reshard only wires flags to these functions and prints results.
package devstack
