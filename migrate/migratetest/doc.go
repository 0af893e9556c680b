// Package migratetest holds the end-state checks of the tests that run migrations on real
// shards (migrate's and integration's): the catalog, and what a migration may leave on a
// shard. Every tenant's rows are checked by internal/demo (CheckTenants, CheckStack).
package migratetest
