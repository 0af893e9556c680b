package pgmeta

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// foreignKeysIntoSQL lists the foreign keys whose referencing table is not one of the
// sharded tables $1 (quoted names) nor a partition of one, and whose referenced table is.
const foreignKeysIntoSQL = `
WITH sharded AS (
	SELECT p.relid, t.name
	FROM unnest($1::text[], $2::text[]) AS t(quoted, name)
	CROSS JOIN LATERAL (SELECT to_regclass(t.quoted) AS relid
		UNION SELECT relid FROM pg_partition_tree(to_regclass(t.quoted))) p
	WHERE p.relid IS NOT NULL
)
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
