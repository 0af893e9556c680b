package pgmeta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Schema is where sharded tables live.
const Schema = "public"

// CheckShard lists every problem that keeps a database from being a shard of a keyspace
// with sharding column key and the given tables: wal_level not logical; a table missing;
// the key column missing or not bigint; no primary key; a partition (or the table) whose
// replica identity does not include the key. Each problem says how to fix it. The error is
// for a failed query, not for a problem found.
func CheckShard(ctx context.Context, q Querier, keys catalog.Keyspace, tables []string) ([]string, error) {
	var problems []string
	lvl, err := WalLevel(ctx, q)
	if err != nil {
		return nil, err
	}
	if lvl != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %s, not logical: run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL", lvl))
	}
	for _, t := range tables {
		ps, err := CheckTable(ctx, q, keys, t)
		if err != nil {
			return nil, err
		}
		problems = append(problems, ps...)
	}
	return problems, nil
}

// relation is one table or partition.
type relation struct {
	oid     uint32
	name    string // schema-qualified, quoted as needed
	relkind string
	replid  string // relreplident: d, i, f or n
	isLeaf  bool
	keyType string // format_type of the key column, "" if missing
	keyNull bool   // the key column is nullable
	// keyNondet names the key column's collation when it is nondeterministic ("" if not).
	keyNondet string
	pkName    string
	pkCols    []string
	riName    string   // the replica identity index (relreplident i)
	riCols    []string // its columns
	uniqKeys  []string // unique, non-partial indexes that include the key (candidates for USING INDEX)
}

// CheckTable returns the problems of one sharded table (see CheckShard).
func CheckTable(ctx context.Context, q Querier, keys catalog.Keyspace, table string) ([]string, error) {
	key := keys.Column(table)
	var oid uint32
	var relkind string
	err := q.QueryRow(ctx, `SELECT c.oid, c.relkind::text FROM pg_class c
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, catalog.QuoteTable(table)).Scan(&oid, &relkind)
	if errors.Is(err, pgx.ErrNoRows) {
		return []string{fmt.Sprintf("table %s does not exist: create it, or remove it from tables: (a name without a schema is looked up in the search_path)", table)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", table, err)
	}
	rels, err := relations(ctx, q, oid, key)
	if err != nil {
		return nil, fmt.Errorf("inspect table %s: %w", table, err)
	}
	var problems []string
	root := rels[0]
	switch {
	case root.keyType == "":
		return []string{fmt.Sprintf("table %s has no column %s (the sharding key): add it as %s, or name the right key column ({table: %s, key: COLUMN})", table, key, keys.KeyType(), table)}, nil
	case !keyTypeIs(root.keyType, keys.KeyType()):
		problems = append(problems, fmt.Sprintf("table %s: key column %s is %s, not %s (every sharded table's key has one type): ALTER TABLE %s ALTER COLUMN %s TYPE %s",
			table, key, root.keyType, keys.KeyType(), catalog.QuoteTable(table), pgx.Identifier{key}.Sanitize(), keys.KeyType()))
	case root.keyNondet != "":
		problems = append(problems, fmt.Sprintf("table %s: key column %s has the nondeterministic collation %s, whose hash reshard does not compute: ALTER TABLE %s ALTER COLUMN %s TYPE %s COLLATE \"C\"",
			table, key, root.keyNondet, catalog.QuoteTable(table), pgx.Identifier{key}.Sanitize(), root.keyType))
	}
	if root.pkName == "" {
		problems = append(problems, fmt.Sprintf("table %s has no primary key: add one that includes the key, e.g. ALTER TABLE %s ADD PRIMARY KEY (%s, id)", table, table, key))
	}
	for _, r := range rels {
		if !r.isLeaf {
			continue
		}
		if p := replicaIdentityProblem(table, key, r, r.oid == root.oid); p != "" {
			problems = append(problems, p)
		}
	}
	return problems, nil
}

// keyTypeIs reports whether a column of PostgreSQL type formatType holds keys of type t
// exactly: a keyspace has one key type.
func keyTypeIs(formatType string, t catalog.KeyType) bool {
	ct, err := catalog.ColumnKeyType(formatType)
	return err == nil && ct == t
}

// replicaIdentityProblem explains why updates and deletes of r would not carry the key.
func replicaIdentityProblem(table, key string, r relation, isRoot bool) string {
	where := "table " + table
	if !isRoot {
		where = fmt.Sprintf("partition %s of %s", r.name, table)
	}
	fix := func() string {
		if len(r.uniqKeys) > 0 {
			return fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY USING INDEX %s", r.name, r.uniqKeys[0])
		}
		cols := []string{key}
		for _, c := range r.pkCols {
			if c != key {
				cols = append(cols, c)
			}
		}
		idx := shortName(strings.TrimPrefix(r.name, Schema+".") + "_" + key + "_ri")
		s := ""
		if r.keyNull {
			s = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL; ", r.name, key)
		}
		return s + fmt.Sprintf("CREATE UNIQUE INDEX %s ON %s (%s); ALTER TABLE %s REPLICA IDENTITY USING INDEX %s",
			idx, r.name, strings.Join(cols, ", "), r.name, idx)
	}
	switch r.replid {
	case "f":
		return "" // FULL: every column, the key included
	case "n":
		return fmt.Sprintf("%s has REPLICA IDENTITY NOTHING, so its updates and deletes do not carry %s: %s", where, key, fix())
	case "i":
		if slices.Contains(r.riCols, key) {
			return ""
		}
		return fmt.Sprintf("%s: its replica identity index %s (%s) does not include %s: %s", where, r.riName, strings.Join(r.riCols, ", "), key, fix())
	default: // d: the primary key
		if r.pkName == "" {
			return fmt.Sprintf("%s has no primary key, so its updates and deletes carry no key: %s", where, fix())
		}
		if slices.Contains(r.pkCols, key) {
			return ""
		}
		return fmt.Sprintf("%s: its replica identity is the primary key %s (%s), which does not include %s: %s", where, r.pkName, strings.Join(r.pkCols, ", "), key, fix())
	}
}

// treeSQL selects (relid, isleaf, level) for a table and all its partitions.
// pg_partition_tree alone returns nothing for a plain table that is not partitioned.
func treeSQL(rel string) string {
	return `SELECT relid, isleaf, level FROM pg_partition_tree(` + rel + `)
		UNION SELECT c.oid, true, 0 FROM pg_class c WHERE c.oid = ` + rel + ` AND c.relkind = 'r' AND NOT c.relispartition`
}

func shortName(s string) string {
	if len(s) > 63 {
		return s[:63]
	}
	return s
}

// relations returns the table (first) and all its partitions with what the checks need.
func relations(ctx context.Context, q Querier, oid uint32, key string) ([]relation, error) {
	rows, err := q.Query(ctx, `
SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relreplident::text, p.isleaf,
       coalesce((SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped), ''),
       coalesce((SELECT NOT a.attnotnull FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped), false),
       coalesce((SELECT co.collname::text FROM pg_attribute a JOIN pg_collation co ON co.oid = a.attcollation
                  WHERE a.attrelid = c.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND NOT co.collisdeterministic), ''),
       coalesce((SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), ''),
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
                  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
       coalesce((SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), ''),
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
                  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisreplident), '{}'),
       coalesce((SELECT array_agg(i.indexrelid::regclass::text ORDER BY i.indexrelid) FROM pg_index i
                  WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL AND i.indimmediate
                    AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum) WHERE k.attnum = 0)
                    AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum) JOIN pg_attribute a
                                     ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
                    AND EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum) JOIN pg_attribute a
                                 ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE a.attname = $2)), '{}')
FROM (`+treeSQL("$1::oid::regclass")+`) p
JOIN pg_class c ON c.oid = p.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY p.level, c.relname`, oid, key)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (relation, error) {
		var r relation
		err := row.Scan(&r.oid, &r.name, &r.relkind, &r.replid, &r.isLeaf, &r.keyType, &r.keyNull, &r.keyNondet,
			&r.pkName, &r.pkCols, &r.riName, &r.riCols, &r.uniqKeys)
		return r, err
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("relation %d vanished", oid)
	}
	return out, nil
}
