// Package cutover is the cutover window: the steps that hand one caught-up range from its
// source shard to its target. It fences writes to the range on the source, drains the
// transactions that predate the fence, waits until the mover has applied everything up
// to the fence, verifies both copies, raises the target's sequences, flips ownership in
// one etcd transaction and opens the range on the target.
//
// The steps of one cutover (Run), in order:
//
//  1. Freeze: the catalog range goes serving -> frozen; routers hold writes for it.
//  2. Fence: a row in reshard.fence on the source; the reshard_fence trigger, installed
//     at migration start, rejects writes to the range with SQLSTATE RS001.
//  3. Drain: wait, bounded, for every transaction that started before the fence.
//  4. Catch up: capture the fence LSN; wait until the mover has applied it.
//  5. Verify: row count and an order-independent hash per table agree.
//  6. Sequences: the target's sequences are raised to at least the source's.
//  7. Flip: one etcd Txn moves ownership and bumps the epoch. This is the commit point.
//  8. Open: the target's fence for the range, and any tombstone over it, go; the mover's
//     apply stops.
//
// The time from step 1 to step 8 is the range's write-unavailability window.
//
// The window undoes itself: any failure before step 7 runs Undo (the journal back to
// catching_up and the range to serving by compare-and-swap, then the fence dropped), and
// the copy stays for another attempt; a flip whose answer was lost is settled by reading
// the journal again (flipFailed) and, while etcd cannot say, the range stays fenced.
//
// Around the window, the migration (package migrate) runs the mover before it and the
// cleanup after it, and rolls the whole migration back when a cutover cannot succeed
// (migrate.Rollback: slot, publication and the target's copy removed). For that it uses
// this package's primitives on the shards: the guard trigger (InstallGuard, RemoveGuard),
// the fence rows (SetFence, ClaimFence, MarkTombstone, DropFence, OpenRange,
// ClearTombstones), the verify (Verify) and the batched deletes of a moved range from its
// old shard (DeleteRange). docs/architecture.md shows the levels.
package cutover
