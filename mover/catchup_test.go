package mover

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
)

// identitySchema has the column kinds ORMs create: identity columns GENERATED ALWAYS (in
// the key, outside it, under REPLICA IDENTITY FULL) and a GENERATED ... STORED column,
// which only the target may compute.
const identitySchema = `
CREATE TABLE items (
	tenant_id bigint NOT NULL,
	id        bigint GENERATED ALWAYS AS IDENTITY,
	name      text,
	qty       integer NOT NULL DEFAULT 1,
	total     numeric GENERATED ALWAYS AS (qty * 2.5) STORED,
	PRIMARY KEY (tenant_id, id)
);
CREATE TABLE tickets (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	no        bigint GENERATED ALWAYS AS IDENTITY,
	note      text,
	PRIMARY KEY (tenant_id, id)
);
CREATE TABLE logs (
	tenant_id bigint NOT NULL,
	id        bigint GENERATED ALWAYS AS IDENTITY (START WITH 500),
	msg       text,
	PRIMARY KEY (tenant_id, id)
);
ALTER TABLE logs REPLICA IDENTITY FULL;
`

var identityTables = []string{"items", "tickets", "logs"}

// allRows returns every row of table on one side as text, sorted: inRange selects the rows
// of the range, or the rows outside it.
func allRows(t testing.TB, ctx context.Context, pool *pgxpool.Pool, table string, r catalog.KeyRange, inRange bool) []string {
	t.Helper()
	pred := r.SQL("tenant_id")
	if !inRange {
		pred = "NOT " + pred
	}
	return texts(t, ctx, pool, fmt.Sprintf("SELECT t::text FROM %s t WHERE %s ORDER BY 1", table, pred))
}

// TestCatchUpIdentityAndGeneratedColumns: a range of tables with GENERATED ALWAYS identity
// columns and a stored generated column is copied and caught up while rows are inserted,
// updated (other columns, the identity itself, the key) and deleted; the target ends with
// exactly the source's rows of the range, its generated values computed, and the target's
// own tenant untouched.
func TestCatchUpIdentityAndGeneratedColumns(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, dst := pair(t, ctx, identitySchema)
	mustExec(t, ctx, src, `
		INSERT INTO items (tenant_id, name, qty) SELECT tn, 'i' || g, g FROM generate_series(1, 20) g, unnest(ARRAY[5, 10, 11, 12, 13, 15, 25]) tn;
		INSERT INTO tickets (tenant_id, id, note) SELECT tn, g, 'n' || g FROM generate_series(1, 20) g, unnest(ARRAY[5, 10, 11, 12, 25]) tn;
		INSERT INTO logs (tenant_id, msg) SELECT tn, 'm' || g FROM generate_series(1, 20) g, unnest(ARRAY[5, 10, 11, 25]) tn;`)
	// The target's own tenant, which the move must leave alone.
	mustExec(t, ctx, dst, `
		INSERT INTO items (tenant_id, name) SELECT 50, 'mine' FROM generate_series(1, 5);
		INSERT INTO tickets (tenant_id, id, note) SELECT 50, g, 'mine' FROM generate_series(1, 5) g;
		INSERT INTO logs (tenant_id, msg) SELECT 50, 'mine' FROM generate_series(1, 5);`)
	rng := catalog.NewRange(10, 20)
	mine := map[string][]string{}
	for _, tb := range identityTables {
		mine[tb] = allRows(t, ctx, dst, tb, rng, false)
	}
	m := startMover(t, ctx, moveConfig(t, "ident", srcPG, dstPG, identityTables, rng), newMemJournal())
	defer m.Stop(ctx)
	for _, q := range []string{
		// items: identity in the key.
		`INSERT INTO items (tenant_id, name, qty) VALUES (12, 'new', 3), (25, 'outside', 1)`,
		`UPDATE items SET qty = qty + 1 WHERE tenant_id = 10`,
		`UPDATE items SET id = DEFAULT WHERE tenant_id = 11 AND id IN (SELECT min(id) FROM items WHERE tenant_id = 11)`,
		`UPDATE items SET tenant_id = 13, name = 'rekeyed' WHERE tenant_id = 11 AND id IN (SELECT max(id) FROM items WHERE tenant_id = 11)`,
		`UPDATE items SET tenant_id = 14 WHERE tenant_id = 5 AND qty <= 3`,  // enters the range
		`UPDATE items SET tenant_id = 30 WHERE tenant_id = 15 AND qty <= 3`, // leaves it
		`DELETE FROM items WHERE tenant_id = 12 AND qty BETWEEN 5 AND 7`,
		`BEGIN; INSERT INTO items (tenant_id, name) VALUES (13, 'x'); UPDATE items SET qty = 9 WHERE name = 'x';
		 UPDATE items SET id = DEFAULT, qty = 10 WHERE name = 'x'; COMMIT`,
		// tickets: identity outside the key, so whether it changed is not in the stream.
		`INSERT INTO tickets (tenant_id, id, note) VALUES (10, 100, 'new'), (25, 100, 'outside')`,
		`UPDATE tickets SET note = 'edited' WHERE tenant_id = 10 AND id <= 5`,
		`UPDATE tickets SET no = DEFAULT WHERE tenant_id = 11 AND id <= 5`,
		`UPDATE tickets SET id = id + 1000, note = 'rekeyed' WHERE tenant_id = 12 AND id <= 3`,
		`UPDATE tickets SET tenant_id = 13 WHERE tenant_id = 5 AND id <= 3`, // enters the range
		`DELETE FROM tickets WHERE tenant_id = 12 AND id BETWEEN 10 AND 12`,
		`BEGIN; UPDATE tickets SET note = 'twice' WHERE tenant_id = 11 AND id = 7; UPDATE tickets SET no = DEFAULT WHERE tenant_id = 11 AND id = 7;
		 UPDATE tickets SET note = 'thrice' WHERE tenant_id = 11 AND id = 7; COMMIT`,
		// logs: REPLICA IDENTITY FULL, so the old row comes with every change.
		`INSERT INTO logs (tenant_id, msg) VALUES (10, 'new'), (25, 'outside')`,
		`UPDATE logs SET msg = 'edited' WHERE tenant_id = 10`,
		`UPDATE logs SET id = DEFAULT WHERE tenant_id = 11 AND msg IN ('m1', 'm2')`,
		`UPDATE logs SET tenant_id = 12 WHERE tenant_id = 5 AND msg = 'm3'`, // enters the range
		`DELETE FROM logs WHERE tenant_id = 11 AND msg = 'm4'`,
	} {
		mustExec(t, ctx, src, q)
	}
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	for _, tb := range identityTables {
		a, b := allRows(t, ctx, src, tb, rng, true), allRows(t, ctx, dst, tb, rng, true)
		if !slices.Equal(a, b) {
			t.Errorf("%s: the range differs:\nsource %v\ntarget %v", tb, a, b)
		}
		if got := allRows(t, ctx, dst, tb, rng, false); !slices.Equal(got, mine[tb]) {
			t.Errorf("%s: the target's own rows changed:\nbefore %v\nafter  %v", tb, mine[tb], got)
		}
	}
}
