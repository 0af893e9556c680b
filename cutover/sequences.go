package cutover

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Sequence is a sequence a sharded table's column defaults call, or that an identity or
// serial column owns.
type Sequence struct {
	Name  string // schema-qualified, quoted
	Value int64
}

// sequencesSQL lists the sequences behind the tables' ids with their last value on this
// shard (0 for one never used), in one round trip. It follows the catalog's dependencies
// rather than pg_get_serial_sequence, which only knows sequences a column owns: a column
// default records a dependency on every sequence its expression names (nextval('x') of a
// sequence shared by many tables, in any expression), and an identity or serial column's
// sequence depends on its table. The defaults of partitions count too (a partition can
// have its own).
const sequencesSQL = `
WITH rel AS (
	SELECT p.relid
	FROM unnest($1::text[]) AS t(name)
	CROSS JOIN LATERAL (SELECT to_regclass(t.name) AS relid
		UNION SELECT relid FROM pg_partition_tree(to_regclass(t.name))) p
), seq AS (
	SELECT d.refobjid AS oid
	FROM pg_attrdef ad
	JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
	WHERE ad.adrelid IN (SELECT relid FROM rel)
	UNION
	SELECT d.objid
	FROM pg_depend d
	WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
	  AND d.refobjid IN (SELECT relid FROM rel) AND d.deptype IN ('a', 'i')
)
SELECT format('%I.%I', n.nspname, c.relname), coalesce(pg_sequence_last_value(c.oid), 0)
FROM seq JOIN pg_class c ON c.oid = seq.oid AND c.relkind = 'S'
JOIN pg_namespace n ON n.oid = c.relnamespace`

// raiseSQL raises each named sequence to at least the given value, all in one round trip,
// and returns the value each sequence is at. A sequence already at or past the value is
// left alone (setval to a value it has already passed would move it backwards); a
// concurrent nextval can only race a raise, which moves the sequence forwards.
const raiseSQL = `
SELECT u.name, CASE WHEN u.v > coalesce(pg_sequence_last_value(u.name::regclass), 0)
	THEN setval(u.name::regclass, u.v)
	ELSE coalesce(pg_sequence_last_value(u.name::regclass), 0) END
FROM unnest($1::text[], $2::bigint[]) AS u(name, v)`

// tableSequences lists the sequences behind the tables' column defaults and identity
// columns, owned or not, with their last value on this shard.
func tableSequences(ctx context.Context, db Querier, tables []string) (map[string]int64, error) {
	rows, err := db.Query(ctx, sequencesSQL, pgx.QueryExecModeExec, catalog.QuoteTables(tables))
	if err != nil {
		return nil, fmt.Errorf("cutover: list sequences: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, rows.Err()
}

// warmSequences reads the sequences on both shards, before the freeze, so that the
// statements of SyncSequences find their catalog entries loaded. Errors are ignored.
func warmSequences(ctx context.Context, src, dst Querier, tables []string) {
	sv, err := tableSequences(ctx, src, tables)
	if err != nil || len(sv) == 0 {
		return
	}
	names := make([]string, 0, len(sv))
	for name := range sv {
		names = append(names, name)
	}
	_, _ = dst.Exec(ctx, `SELECT count(pg_sequence_last_value(n::regclass)) FROM unnest($1::text[]) AS n`, pgx.QueryExecModeExec, names)
}

// SyncSequences raises every sequence behind the tables on the target to at least the
// source's value. Logical replication does not carry sequence values, so without this an
// id issued on the target after the flip could collide with a moved row. It takes two
// round trips: one per shard.
func SyncSequences(ctx context.Context, src, dst Querier, tables []string) ([]Sequence, error) {
	sv, err := tableSequences(ctx, src, tables)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	var names []string
	var vals []int64
	for name, v := range sv {
		if v > 0 {
			names, vals = append(names, name), append(vals, v)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := dst.Query(ctx, raiseSQL, pgx.QueryExecModeExec, names, vals)
	if err != nil {
		return nil, fmt.Errorf("cutover: raise sequences %v on the target to the source's %v: %w", names, vals, err)
	}
	defer rows.Close()
	var out []Sequence
	for rows.Next() {
		var s Sequence
		if err := rows.Scan(&s.Name, &s.Value); err != nil {
			return out, err
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("cutover: raise sequences %v on the target to the source's %v: %w", names, vals, err)
	}
	return out, nil
}
