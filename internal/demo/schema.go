package demo

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Key is the sharding column of every demo table (bigint, or uuid: TenantID).
const Key = "tenant_id"

// Tables are the sharded tables of the demo schema, in the order cluster.yaml lists them.
var Tables = []string{"tenants", "orders", "order_items", "ledger", "events"}

// Partitioned is the date-partitioned table, its column and interval.
const (
	PartitionedTable  = "events"
	PartitionedColumn = "created_at"
)

// Days of events data before today (today included) and daily partitions made ahead of
// today. Partition maintenance (premake 7) is left something to do.
const (
	DataDays  = 7
	AheadDays = 2
)

// schemaSQL is the schema with KEYTYPE for the tenant_id columns' type.
const schemaSQL = `
CREATE TABLE tenants (
    tenant_id  KEYTYPE PRIMARY KEY,
    name       text NOT NULL,
    plan       text NOT NULL,
    balance    numeric(14,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    tenant_id  KEYTYPE NOT NULL,
    id         bigserial,
    status     text NOT NULL DEFAULT 'new',
    total      numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE order_items (
    tenant_id KEYTYPE NOT NULL,
    order_id  bigint NOT NULL,
    id        bigserial,
    sku       text NOT NULL,
    qty       integer NOT NULL,
    price     numeric(12,2) NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX order_items_by_order ON order_items (tenant_id, order_id);
CREATE TABLE ledger (
    tenant_id  KEYTYPE NOT NULL,
    id         bigserial,
    amount     numeric(12,2) NOT NULL,
    memo       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE events (
    tenant_id  KEYTYPE NOT NULL,
    id         bigserial,
    created_at timestamptz NOT NULL,
    kind       text NOT NULL,
    payload    jsonb,
    PRIMARY KEY (tenant_id, id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
`

// PartitionName is the deterministic name of the daily partition holding day (UTC), the
// naming partition maintenance uses too.
func PartitionName(day time.Time) string {
	return PartitionedTable + "_p" + day.UTC().Format("20060102")
}

// SchemaSQL returns the statements that create the demo schema, with daily events
// partitions from DataDays-1 days before now's day to AheadDays after it (UTC).
func SchemaSQL(now time.Time) string { return SchemaSQLOf[int64](now) }

// SchemaSQLOf is SchemaSQL with tenant_id columns of K's type.
func SchemaSQLOf[K TenantID](now time.Time) string {
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(schemaSQL, "KEYTYPE", sqlType[K]()))
	today := now.UTC().Truncate(24 * time.Hour)
	for d := -(DataDays - 1); d <= AheadDays; d++ {
		from := today.AddDate(0, 0, d)
		to := from.AddDate(0, 0, 1)
		fmt.Fprintf(&b, "CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s');\n",
			PartitionName(from), PartitionedTable, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return b.String()
}

// Execer is what CreateSchema needs: a *pgx.Conn, a *pgxpool.Pool or a pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// CreateSchema creates the demo tables in one transaction; it fails, changing nothing, if
// any of them exists already.
func CreateSchema(ctx context.Context, db Execer, now time.Time) error {
	return CreateSchemaOf[int64](ctx, db, now)
}

// CreateSchemaOf is CreateSchema with tenant_id columns of K's type.
func CreateSchemaOf[K TenantID](ctx context.Context, db Execer, now time.Time) error {
	// A multi-statement simple-protocol Exec runs as one implicit transaction.
	if _, err := db.Exec(ctx, SchemaSQLOf[K](now)); err != nil {
		return fmt.Errorf("demo: create schema (drop the demo tables or use an empty database): %w", err)
	}
	return nil
}
