// Package planner turns a catalog snapshot and its load statistics into a plan of splits and
// moves that evens out the load of the shards. It is pure: no I/O, no clock, no randomness;
// the same state, stats and options give the same plan (byte for byte once encoded), whatever
// the order of the ranges, stats and hot keys in the input.
//
// Load is a weighted mix of bytes and writes/s (Strategy size, writes or balanced), scaled so
// that the mean active shard carries 1. The planner drains shards marked draining, splits
// ranges that alone carry more than one shard should (around a hot tenant so it gets its own
// range, or at the load-weighted median), then moves ranges from the most to the least loaded
// shard while a shard is outside Threshold of the mean. It never raises the largest load
// except to drain a shard, honours MaxMoves and MaxBytes, and says why for every step. Ranges
// that are frozen or being migrated are left where they are.
//
// A Plan records the catalog revision it was made from and the mod revision of every range it
// touches, so an executor can refuse it once the catalog has changed. Steps run in order:
// splits first, then moves, and a move names the part of a split it moves. Loads and bytes of
// parts are estimates from hot tenants and an even spread of the rest (see docs/planner.md).
package planner
