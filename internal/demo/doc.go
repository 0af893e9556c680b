// Package demo is the multi-tenant application that `reshard dev` and the end-to-end tests
// run on their shards: its schema, a skewed data set, and a live write load.
//
// Schema: every table is keyed by tenant_id (bigint) with a primary key that starts with it,
// so the default replica identity includes the sharding key, as reshard requires. There are
// no foreign keys between tables: a move copies tables in parallel chunks and applies whole
// source transactions, so cross-table constraints would only get in the way. events is
// partitioned by day on created_at, with a DEFAULT partition.
//
// Invariant: tenants.balance equals the sum of that tenant's ledger.amount at every commit.
// The data set is generated that way and every load transaction that adds a ledger row
// updates the balance in the same transaction, so a check after any number of moves can
// tell a lost or duplicated write.
//
// Data: GenerateTenants is deterministic for the same options. Tenant weights follow a Zipf
// law (a handful of tenants hold most rows and most writes), the ids are spread over the
// int64 key line, and the heaviest tenants are placed inside DataOptions.HotRange, so the
// shard owning that range is clearly the hottest. LoadShard writes a shard's tenants with
// COPY, in one transaction, in memory that does not grow with the scale.
//
// Load: a Loader runs workers that pick tenants by weight and run realistic transactions
// (new order with items, ledger entry with balance update, event, status update, delete of
// an old order). Where a tenant lives is asked of a Router for every attempt, and an error
// the RetryIf predicate accepts (the cutover's fence error, a frozen range) is retried from
// routing on, so a router that follows the catalog survives a cutover. Only a commit that
// succeeded counts as acknowledged; every acknowledged ledger row is recorded so a test can
// check that it is present exactly once.
//
// Every tenant's rows: Fingerprint counts and hashes each tenant's rows per table on a
// shard (TakeSnapshot on every shard). The loader keeps, per tenant and table, the net row
// count change of its acknowledged transactions, marks a tenant whose transaction has an
// unknown outcome uncertain, and never writes to the tenants in LoadOptions.Quiet
// (QuietTenants spreads them over the key line). CompareTenants then checks a later
// snapshot: each tenant's rows only on its owner; untouched tenants equal to the start in
// count and hash; written ones at the start's count plus their acknowledged changes. A
// move that deletes or duplicates rows of a tenant it was not moving cannot pass it.
package demo
