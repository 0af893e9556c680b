package pgmeta

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// shardedCTE is the sharded tables $1 (quoted names; $2 the names as configured) and
// their partitions, each relation with its table's configured name.
const shardedCTE = `
WITH sharded AS (
	SELECT p.relid, t.name
	FROM unnest($1::text[], $2::text[]) AS t(quoted, name)
	CROSS JOIN LATERAL (SELECT to_regclass(t.quoted) AS relid
		UNION SELECT relid FROM pg_partition_tree(to_regclass(t.quoted))) p
	WHERE p.relid IS NOT NULL
)
`

// foreignKeysIntoSQL lists the foreign keys whose referencing table is not one of the
// sharded tables $1 (quoted names) nor a partition of one, and whose referenced table is.
const foreignKeysIntoSQL = shardedCTE + `
SELECT DISTINCT c.conrelid::regclass::text, c.conname::text, s.name
FROM pg_constraint c JOIN sharded s ON s.relid = c.confrelid
WHERE c.contype = 'f' AND c.conrelid NOT IN (SELECT relid FROM sharded)
  AND c.conparentid = 0
ORDER BY 1, 2`

// ForeignKeysInto warns about each foreign key from a table that is not sharded into a
// sharded one: when a range moves, its rows are deleted from the old shard, which the
// foreign key refuses (or cascades into the unsharded table's rows), and the new shard's
// copy has no referencing rows. One line per constraint, saying what to do.
func ForeignKeysInto(ctx context.Context, q Querier, tables []string) ([]string, error) {
	rows, err := q.Query(ctx, foreignKeysIntoSQL, catalog.QuoteTables(tables), tables)
	if err != nil {
		return nil, err
	}
	var out []string
	var from, con, to string
	_, err = pgx.ForEachRow(rows, []any{&from, &con, &to}, func() error {
		out = append(out, fmt.Sprintf("warning: table %s is not sharded but its foreign key %s references sharded table %s: when a range moves, deleting its rows from the old shard fails on (or cascades into) %s's rows, which stay behind: add %s to tables: (with its key column) or drop the constraint",
			from, con, to, from, from))
		return nil
	})
	return out, err
}

// foreignKeysAmongSQL lists the foreign keys between the sharded tables $1 (quoted names;
// $2 the names as configured), partitions counted as their table, as (child, parent).
const foreignKeysAmongSQL = shardedCTE + `
SELECT DISTINCT child.name, parent.name
FROM pg_constraint c
JOIN sharded child ON child.relid = c.conrelid
JOIN sharded parent ON parent.relid = c.confrelid
WHERE c.contype = 'f' AND child.name <> parent.name`

// ParentsFirst orders the sharded tables so that every table comes after the tables its
// foreign keys reference, keeping the given order where the keys leave it free. Copies
// without replica mode load in this order and deletes (cleanup, a cancelled copy) run in
// the reverse one, so each statement's foreign key checks find their rows. A cycle of
// foreign keys is an error naming its tables.
func ParentsFirst(ctx context.Context, q Querier, tables []string) ([]string, error) {
	rows, err := q.Query(ctx, foreignKeysAmongSQL, catalog.QuoteTables(tables), tables)
	if err != nil {
		return nil, fmt.Errorf("read the foreign keys between the sharded tables: %w", err)
	}
	parents := map[string][]string{}
	var child, parent string
	if _, err := pgx.ForEachRow(rows, []any{&child, &parent}, func() error {
		parents[child] = append(parents[child], parent)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the foreign keys between the sharded tables: %w", err)
	}
	return orderParentsFirst(tables, parents)
}

// orderParentsFirst is a depth-first topological sort in the given order.
func orderParentsFirst(tables []string, parents map[string][]string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var out, path []string
	var visit func(t string) error
	visit = func(t string) error {
		switch state[t] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("the foreign keys of %s form a cycle: reshard copies the sharded tables parents first and deletes children first, which a cycle has no order for: drop one of these foreign keys", strings.Join(append(path, t), " -> "))
		}
		state[t] = visiting
		path = append(path, t)
		for _, p := range parents[t] {
			if err := visit(p); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[t] = done
		out = append(out, t)
		return nil
	}
	for _, t := range tables {
		if err := visit(t); err != nil {
			return nil, err
		}
	}
	return out, nil
}
