// Package partitions keeps date-partitioned tables ready on one shard, from the catalog's
// partition specs and an instant "now" that the caller passes in (a fake clock in tests).
//
// Contract:
//   - Plan changes nothing. Apply creates every missing partition from the current period
//     through premake periods ahead, named <table>_pYYYYMMDD after the period's first day
//     in the spec's time zone, with bounds in the column's own type (an instant with an
//     explicit offset for timestamptz, a wall-clock value for timestamp and date).
//   - Existing partitions are read from pg_inherits and pg_get_expr(relpartbound), never
//     from their names. A period already covered is left alone: Apply is idempotent.
//   - A new partition gets, besides what CREATE TABLE ... PARTITION OF clones, the parent's
//     owner, replica identity (the partition's own index of the parent's replica-identity
//     index) and grants; partitions of the premake window are brought in line the same way.
//   - Past retention, a partition is detached (CONCURRENTLY when no DEFAULT partition
//     exists) or dropped; the last partition is never removed and the DEFAULT partition is
//     never touched.
//   - A partition whose range already has rows in the DEFAULT partition is not created:
//     the table's report names the rows' range and gives the SQL that moves them.
//   - Every DDL waits at most Options.LockTimeout for its lock and is retried with backoff,
//     so it never makes other sessions queue behind it for long.
//   - Problems are collected per table; one table never stops the others. Bad specs are
//     one error before anything is done.
//   - One Apply at a time per shard (a session advisory lock); ErrBusy otherwise.
package partitions
