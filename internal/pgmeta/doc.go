// Package pgmeta inspects a shard's PostgreSQL database for reshard: reachability,
// wal_level, the sharded tables (key column, primary key, replica identity that includes
// the key, on every partition), the sequences behind the tables' ids (TableSequences),
// sizes per table and per tenant, and the write rate per tenant sampled from the WAL.
//
// It only reads, with one exception: SampleWrites creates a temporary logical replication
// slot named reshard_stats_* and always drops it before returning, on success, error or
// cancellation (and, being temporary, the server drops it with the session if reshard
// dies). Errors never carry a DSN's password.
package pgmeta
