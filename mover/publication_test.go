package mover

import (
	"context"
	"testing"

	"github.com/reshard/reshard/catalog"
)

func TestPublicationSQL(t *testing.T) {
	tb := testTable()
	got := publicationSQL("reshard_m1", catalog.RangeOn("tenant_id"), catalog.NewRange(10, 20), []*table{tb, tb})
	want := `CREATE PUBLICATION "reshard_m1" FOR TABLE "public"."orders" WHERE ("tenant_id" >= 10 AND "tenant_id" < 20), ` +
		`TABLE "public"."orders" WHERE ("tenant_id" >= 10 AND "tenant_id" < 20) WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`
	if got != want {
		t.Errorf("publicationSQL =\n%s\nwant\n%s", got, want)
	}
}

// TestPartitionedTable moves a range of a partitioned table to a target partitioned
// differently: changes are published as the root's. A cancel then removes the copy from
// every partition of the target, and not one row of the other tenants there.
func TestPartitionedTable(t *testing.T) {
	ctx := context.Background()
	const parent = `CREATE TABLE events (tenant_id bigint NOT NULL, id bigint NOT NULL, at date NOT NULL, payload text,
		PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at);`
	srcPG, dstPG, src, dst := pair(t, ctx, parent)
	mustExec(t, ctx, src, `CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
		CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
		INSERT INTO events SELECT t, i, date '2024-01-01' + (i % 59), 'e' || i FROM generate_series(1, 9) t, generate_series(1, 300) i`)
	mustExec(t, ctx, dst, `CREATE TABLE events_jan PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
		CREATE TABLE events_all PARTITION OF events DEFAULT`)
	rng := catalog.NewRange(3, 6)
	seedNeighbours(t, ctx, src, dst, []string{"events"}, rng)
	m := startMover(t, ctx, moveConfig(t, "parts", srcPG, dstPG, []string{"events"}, rng), newMemJournal())
	defer m.Stop(ctx)
	for _, q := range []string{
		`INSERT INTO events VALUES (4, 1000, '2024-01-15', 'new p1'), (4, 1001, '2024-02-15', 'new p2'), (8, 1002, '2024-02-15', 'outside')`,
		`UPDATE events SET at = '2024-02-20' WHERE tenant_id = 3 AND id = 1`, // crosses partitions
		`UPDATE events SET payload = 'edited' WHERE tenant_id = 5 AND id < 10`,
		`UPDATE events SET tenant_id = 4, id = 5000 WHERE tenant_id = 7 AND id = 2`, // into the range
		`UPDATE events SET tenant_id = 8, id = 5001 WHERE tenant_id = 5 AND id = 3`, // out of it
		`DELETE FROM events WHERE tenant_id = 3 AND id BETWEEN 100 AND 110`,
	} {
		mustExec(t, ctx, src, q)
	}
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, []string{"events"}, rng)

	if err := m.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rangeRows(t, ctx, dst, "events", rng)); n != 0 {
		t.Errorf("%d rows of the range left on the target after Cancel", n)
	}
	assertOthers(t, ctx, dst, []string{"events"}, rng)
}
