// Package catalog is the source of truth for which shard owns which tenant range: the data
// model (Config, Shard, Range, Stats, Migration, Event), its validation, and the etcd store.
// It is the only package that imports the etcd client.
//
// Ranges are half-open [lo, hi) over int64 and tile the whole key line with no gap and no
// overlap. Every write that depends on something read compares the mod revisions it read in
// one etcd Txn: a lost race is ErrConflict, never a silent overwrite. An ownership flip and a
// split are each one transaction, so a reader never sees a gap or two owners.
//
// Under hash distribution the key line is the 64-bit hash of the tenant key: HashKey computes
// it exactly as PostgreSQL's extended hash functions do with seed 0 (hashint8extended,
// uuid_hash_extended, hashtextextended, ...), for a UTF-8 database, a deterministic collation
// and a little-endian server. ParseKey reads a key as PostgreSQL's input functions do.
package catalog
