// Package cutovertest is the fixture of the cutover and migrate tests: two PostgreSQL
// shards and a catalog in etcd, range [10, 20) of shard s1 already copied to s2 as a
// finished copy would leave it. It starts real servers (internal/testenv): no mocks of
// PostgreSQL or etcd.
package cutovertest
