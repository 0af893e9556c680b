// Package cutover finishes a move: it fences writes to the range on the source, drains
// transactions that predate the fence, waits until the mover has applied everything up to
// the fence, verifies both copies, and flips ownership in one etcd transaction. It also
// rolls a migration back, and deletes a flipped range from its old shard.
//
// The phases of one cutover, in order (see DESIGN.md, "Cutover"):
//
//  1. Freeze: the catalog range goes serving -> frozen; routers hold writes for it.
//  2. Fence: a row in reshard.fence on the source; the reshard_fence trigger, installed
//     at migration start, rejects writes to the range with SQLSTATE RS001.
//  3. Drain: wait, bounded, for every transaction that started before the fence.
//  4. Catch up: capture the fence LSN; wait until the mover has applied it.
//  5. Verify: row count and an order-independent hash per table agree.
//  6. Sequences: the target's sequences are raised to at least the source's.
//  7. Flip: one etcd Txn moves ownership and bumps the epoch. This is the commit point.
//  8. Cleanup: drop slot and publication; delete the range from the source in batches;
//     the fence row stays as a tombstone.
//
// Any failure before step 7 rolls back: fence removed, range serving on the source,
// the target's copy removed. The time from step 1 to step 7 is the range's
// write-unavailability window.
package cutover
