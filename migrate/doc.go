// Package migrate is the life of a migration: one range moving to one shard, from its
// journal's creation to done or rolled back, around the cutover window of package
// cutover; and the plan runner above it, which carries out a plan's splits and moves.
//
// An Executor drives a migration (Move, Resume) only while it holds the migration's lease
// lock, and journals each step in the catalog, so that a re-run after a crash at any
// point finishes it or rolls it back:
//
//  1. Start: the lock, then the journal (planned); the sessions an earlier driver of the
//     migration left are ended; the guard trigger is installed on both shards and the
//     incoming range fenced on the target.
//  2. Copy and catch up: the mover copies the range and applies the source's changes,
//     checkpointing into the journal (Journal) until the executor seals it.
//  3. Cutover: cutover.Run. A cutover undone for a transient reason (stragglers, a
//     catch-up timeout, a missing guard) is retried; any other failure rolls the
//     migration back.
//  4. Finish: the range opened on the target, the source's fence made a tombstone, slot
//     and publication dropped, the range deleted from the source in batches, done
//     (Cleanup does the deletes later, for --cleanup later).
//
// Rollback ends a migration that has not flipped: the journal goes to rolling_back by
// compare-and-swap before anything on PostgreSQL is touched, then the fences, slot,
// publication and the target's copy go, the journal takes its final phase (rolled_back,
// or cancelled by Cancel), and last the guard triggers that no fence and no other
// unfinished migration needs are removed. The window's own undo, which keeps the copy for
// another attempt, is cutover.Undo.
//
// A plan (package planner makes them) is carried out by Executor.ApplyPlan: its splits,
// then its moves, each a migration, at most Parallel at once and never two on one shard.
// A re-run of the same plan resumes it; a plan whose ranges changed since it was made is
// refused (ErrStalePlan), and every new move is checked (CheckMove) before the first
// write.
//
// Carve splits a catalog range so that a part of it can move on its own.
package migrate
