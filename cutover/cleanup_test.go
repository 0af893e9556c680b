package cutover

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// partitionedSchema is the demo's events table in small: tenants' rows share partitions, so
// the same ctid exists in several partitions at once.
const partitionedSchema = `
CREATE TABLE events (
    tenant_id  bigint NOT NULL,
    id         bigserial,
    created_at timestamptz NOT NULL,
    kind       text NOT NULL,
    PRIMARY KEY (tenant_id, id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-01-02');
CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2024-01-02') TO ('2024-01-03');
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE plain (tenant_id bigint NOT NULL, id bigserial, PRIMARY KEY (tenant_id, id));
`

// tenantCounts returns the rows of each tenant in table.
func tenantCounts(t *testing.T, ctx context.Context, db Querier, table string) map[int64]int64 {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT tenant_id, count(*) FROM `+table+` GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var k, n int64
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCleanupKeepsOtherTenantsOfPartitionedTable: a ctid names a row only within one
// partition, so a batch of the moved range's ctids must not delete the rows of other
// tenants that sit at the same ctids in other partitions. Every tenant's rows are counted.
func TestCleanupKeepsOtherTenantsOfPartitionedTable(t *testing.T) {
	ctx := context.Background()
	tables := []string{"plain", "events"}
	pg, db := guardedShard(t, partitionedSchema, tables...)
	r := catalog.NewRange(1, 2)
	if err := SetFence(ctx, db, "m1", r, tables, 1); err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{7, 128, 5000} {
		// Tenants 1 (moving) and 2, 3 (staying) share every partition, shuffled differently
		// in each, so a ctid of tenant 1 in one partition is another tenant's in the next.
		pg.Exec(ctx, `SET reshard.bypass = on; TRUNCATE events, plain;
			INSERT INTO events (tenant_id, created_at, kind)
			SELECT k, day + (g || ' s')::interval, 'e'
			FROM generate_series(1, 200) g, (VALUES (1), (2), (3)) k(k),
			     (VALUES (timestamptz '2024-01-01'), ('2024-01-02'), ('2024-02-01')) d(day)
			ORDER BY day, md5(day::text || g || '/' || k);
			INSERT INTO plain (tenant_id) SELECT k FROM generate_series(1, 200) g, (VALUES (1), (2), (3)) k(k) ORDER BY g, k`)
		got, err := DeleteRange(ctx, db, catalog.RangeOn("tenant_id"), tables, r, DeleteOptions{BatchRows: batch})
		if err != nil {
			t.Fatalf("batch %d: DeleteRange: %v", batch, err)
		}
		if got["events"] != 600 || got["plain"] != 200 {
			t.Errorf("batch %d: deleted %v; want events 600, plain 200", batch, got)
		}
		want := map[int64]int64{1: 0, 2: 200, 3: 200}
		for _, table := range tables {
			perTable := int64(1)
			if table == "events" {
				perTable = 3 // partitions
			}
			counts := tenantCounts(t, ctx, db, table)
			for k, n := range want {
				if counts[k] != n*perTable {
					t.Errorf("batch %d: %s: tenant %d has %d rows, want %d (all: %v)", batch, table, k, counts[k], n*perTable, counts)
				}
			}
		}
		// A re-run (a resumed cleanup) deletes nothing.
		if again, err := DeleteRange(ctx, db, catalog.RangeOn("tenant_id"), tables, r, DeleteOptions{BatchRows: batch}); err != nil || again["events"]+again["plain"] != 0 {
			t.Errorf("batch %d: second DeleteRange = %v, %v; want nothing deleted", batch, again, err)
		}
	}
}

// TestCleanupStopsWhenTheTombstoneGoes: the cleanup of a flipped migration deletes only
// while its tombstone fences the range on the old shard. A move back to that shard lifts
// the tombstone (the shard owns the range again); a cleanup still running, such as one of a
// driver that was paused past its lease, must delete nothing more.
func TestCleanupStopsWhenTheTombstoneGoes(t *testing.T) {
	ctx := context.Background()
	tables := []string{"plain"}
	pg, db := guardedShard(t, partitionedSchema, tables...)
	pg.Exec(ctx, `INSERT INTO plain (tenant_id) SELECT k FROM generate_series(1, 100) g, (VALUES (1), (2)) k(k)`)
	r := catalog.NewRange(1, 2)
	if _, err := DeleteRange(ctx, db, catalog.RangeOn("tenant_id"), tables, r, DeleteOptions{BatchRows: 10, Tombstone: "m1"}); !errors.Is(err, ErrNotTombstoned) {
		t.Fatalf("cleanup without a tombstone = %v, want ErrNotTombstoned", err)
	}
	if err := MarkTombstone(ctx, db, "m1", r, 1); err != nil {
		t.Fatal(err)
	}
	batches := 0
	opts := DeleteOptions{BatchRows: 10, Tombstone: "m1", Progress: func(string, int64) {
		batches++
		if batches == 3 { // the range moves back meanwhile
			if err := OpenRange(ctx, db, "back", r); err != nil {
				t.Error(err)
			}
		}
	}}
	if _, err := DeleteRange(ctx, db, catalog.RangeOn("tenant_id"), tables, r, opts); !errors.Is(err, ErrNotTombstoned) {
		t.Fatalf("cleanup after the move back = %v, want ErrNotTombstoned", err)
	}
	if got := tenantCounts(t, ctx, db, "plain"); got[1] != 70 || got[2] != 100 {
		t.Errorf("rows per tenant after the stopped cleanup: %v; want 70 of tenant 1 (3 batches) and 100 of tenant 2", got)
	}
}
