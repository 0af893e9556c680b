// Package mover copies one tenant key range from a source to a target PostgreSQL
// database while the application keeps writing, and keeps the target caught up through
// logical replication until the cutover takes ownership (package cutover).
//
// A move runs in phases, each recorded in the migration journal before it changes
// anything, so that a crash at any point is resumed or cleaned up:
//
//  0. Preflight (preflight.go) changes nothing and lists every problem at once: both
//     databases reachable, wal_level=logical, a free slot and WAL sender, connection
//     headroom, the same tables and columns on both sides, primary keys, a replica
//     identity that carries the sharding key (a row filter on any other column breaks
//     every UPDATE and DELETE of the table), the sequences behind the tables' ids on the
//     target with the source's type and direction, and no rows of the range on the target.
//  1. Publication (publication.go): reshard_<id>, one row filter per table for the range,
//     insert/update/delete only (row filters do not apply to TRUNCATE), published via the
//     partition root. Created before the slot, so the slot's decoding sees it.
//  2. Slot (slot.go): a permanent pgoutput slot reshard_<id>, created on a replication
//     connection with an exported snapshot; its consistent LSN goes into the journal.
//  3. Copy (chunks.go, copy.go, relay.go): N workers each open REPEATABLE READ and import
//     the snapshot before anything else is sent on the replication connection. Each
//     table's part of the range is one chunk, or several (primary-key ranges at quantiles
//     of a TABLESAMPLE, or heap block ranges) when workers would otherwise idle; each
//     chunk's COPY ... TO STDOUT (FORMAT binary) is relayed at the wire level into
//     COPY ... FROM STDIN on the target, never decoding a row. Target sessions run as
//     session_replication_role=replica (like PostgreSQL's apply worker); without that
//     privilege, tables load one after the other, parents first. A copy interrupted
//     midway is restarted from scratch (slot, publication and copied rows removed first):
//     its snapshot does not survive its connections.
//  4. Catch-up (stream.go, decode.go, apply.go, catchup.go): START_REPLICATION from the
//     consistent LSN (protocol 1, quoted plugin arguments). Whole source transactions are
//     applied in order, many per target transaction, in pipelined batches: inserts are
//     upserts by primary key, updates and deletes go by the replica identity (the old
//     key when the key changed), unchanged TOASTed values are left out of updates. The
//     same target transaction upserts reshard.progress(migration, lsn) with the last
//     source transaction's end LSN; only after COMMIT is that LSN reported to the source
//     as written, flushed and applied. A restart resumes from reshard.progress and skips
//     what the source resends, so each transaction is applied exactly once. Keepalives
//     that ask for a reply are answered at once; between transactions their WAL end moves
//     the applied position, so an idle source reaches lag zero. Lost connections are
//     retried with backoff; errors a retry cannot cure stop the catch-up (Err).
//  5. Lag (lag.go): bytes between the source's WAL position and the applied one, and
//     seconds since the source time of the applied position; checkpointed in the journal.
//
// Cancel (cancel.go) drops the slot and publication and deletes the range from the
// target, from the journal alone; DropReplication drops only the replication objects,
// after the flip. Throttling (throttle.go): MaxRate bytes/s over copy and apply, the copy
// pauses while another slot on the source lags more than MaxSourceLag, and no more than
// MaxConnections connections are opened per database.
package mover
