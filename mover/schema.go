package mover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
)

// column is one live (not dropped) column of a table.
type column struct {
	Name      string
	Type      string // format_type(atttypid, atttypmod): used in casts and compared across shards
	Generated bool
	// IdentityAlways: GENERATED ALWAYS AS IDENTITY. An INSERT may write it only with
	// OVERRIDING SYSTEM VALUE, an UPDATE never (COPY FROM always may).
	IdentityAlways bool
	// binaryUnsafe: binary COPY encodes the type's OID (composites, arrays of user-defined
	// types), which differs between databases.
	binaryUnsafe bool
}

// table is what the mover knows of one sharded table on one database.
type table struct {
	Name      string // as configured
	Schema    string
	Rel       string
	OID       uint32
	Kind      byte // 'r' table, 'p' partitioned
	Columns   []column
	PK        []string // primary key columns, in index order
	ReplIdent byte     // relreplident: d, i, f, n
	Ident     []string // replica identity columns (nil for full / nothing)
	// identProblems lists partitions whose replica identity lacks the key.
	// ExtraUnique: a unique index or exclusion constraint besides the primary key, which
	// an UPDATE of many rows in one statement could trip over (values swapped between rows).
	ExtraUnique bool
	HeapBytes   int64   // main fork, all partitions
	RowEstimate float64 // pg_class.reltuples, all partitions (0: never analyzed)
	SizeBytes   int64   // with TOAST
}

// Qualified is the quoted schema-qualified name.
func (t *table) Qualified() string { return pgx.Identifier{t.Schema, t.Rel}.Sanitize() }

func (t *table) column(name string) *column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// copyColumns are the columns a COPY carries: all but generated ones.
func (t *table) copyColumns() []string {
	var cols []string
	for _, c := range t.Columns {
		if !c.Generated {
			cols = append(cols, c.Name)
		}
	}
	return cols
}

func (t *table) binarySafe() bool {
	for _, c := range t.Columns {
		if c.binaryUnsafe {
			return false
		}
	}
	return true
}

var errNoTable = errors.New("table does not exist")

// loadTable reads the metadata of the configured table name on one database.
func loadTable(ctx context.Context, q pgmeta.Querier, name string) (*table, error) {
	parts, err := catalog.SplitTableName(name)
	if err != nil {
		return nil, err
	}
	t := &table{Name: name}
	var oid *uint32
	if err := q.QueryRow(ctx, `SELECT to_regclass($1)::oid`, pgx.Identifier(parts).Sanitize()).Scan(&oid); err != nil {
		return nil, fmt.Errorf("look up table %s: %w", name, err)
	}
	if oid == nil {
		return nil, errNoTable
	}
	t.OID = *oid
	var kind, ident string
	// pg_partition_tree is empty for a plain table.
	err = q.QueryRow(ctx, `WITH parts AS (SELECT $1::oid AS relid UNION SELECT relid FROM pg_partition_tree($1::oid) WHERE isleaf)
		SELECT n.nspname, c.relname, c.relkind::text, c.relreplident::text,
		       (SELECT coalesce(sum(pg_relation_size(relid)), 0)::bigint FROM parts),
		       (SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint FROM parts),
		       (SELECT coalesce(sum(greatest(p.reltuples, 0)), 0)::float8 FROM parts JOIN pg_class p ON p.oid = parts.relid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid`, t.OID).
		Scan(&t.Schema, &t.Rel, &kind, &ident, &t.HeapBytes, &t.SizeBytes, &t.RowEstimate)
	if err != nil {
		return nil, fmt.Errorf("read table %s: %w", name, err)
	}
	t.Kind, t.ReplIdent = kind[0], ident[0]
	if t.Kind != 'r' && t.Kind != 'p' {
		return nil, fmt.Errorf("%s is not a table (relkind %q)", name, kind)
	}
	rows, err := q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attidentity = 'a',
		       t.typtype = 'c' OR (t.typelem <> 0 AND (t.typelem >= 16384 OR et.typtype = 'c'))
		FROM pg_attribute a
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_type et ON et.oid = t.typelem
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.Name, &c.Type, &c.Generated, &c.IdentityAlways, &c.binaryUnsafe); err != nil {
			rows.Close()
			return nil, err
		}
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", name, err)
	}
	if t.PK, err = indexColumns(ctx, q, t.OID, "indisprimary"); err != nil {
		return nil, fmt.Errorf("read primary key of %s: %w", name, err)
	}
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::oid AND (indisunique OR indisexclusion) AND NOT indisprimary)
		OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'x')`, t.OID).Scan(&t.ExtraUnique); err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", name, err)
	}
	switch t.ReplIdent {
	case 'd':
		t.Ident = t.PK
	case 'i':
		if t.Ident, err = indexColumns(ctx, q, t.OID, "indisreplident"); err != nil {
			return nil, fmt.Errorf("read replica identity of %s: %w", name, err)
		}
	}
	return t, nil
}

// indexColumns returns the columns of the table's index flagged by flag (indisprimary or
// indisreplident), in index order; nil if there is none.
func indexColumns(ctx context.Context, q pgmeta.Querier, oid uint32, flag string) ([]string, error) {
	return pgmeta.Strings(ctx, q, `SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND i.`+flag+` ORDER BY k.ord`, oid)
}

// identityIncludesKey checks, for the table and each of its leaf partitions, that the
// replica identity carries the key column; it returns one line per offender with the fix.
func identityIncludesKey(ctx context.Context, q pgmeta.Querier, t *table, key string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT p.relid::regclass::text, c.relreplident::text,
		       coalesce((SELECT array_agg(a.attname::text) FROM pg_index i
		                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
		                 WHERE i.indrelid = p.relid AND
		                       CASE c.relreplident WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END), '{}')
		FROM (SELECT $1::oid AS relid, 0 AS level UNION SELECT relid, level FROM pg_partition_tree($1::oid) WHERE isleaf) p
		JOIN pg_class c ON c.oid = p.relid
		ORDER BY p.level, 1`, t.OID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var rel, ident string
		var cols []string
		if err := rows.Scan(&rel, &ident, &cols); err != nil {
			return nil, err
		}
		if ident == "f" {
			continue
		}
		has := false
		for _, c := range cols {
			has = has || c == key
		}
		if has {
			continue
		}
		what := map[string]string{"d": "its primary key", "i": "its replica identity index", "n": "REPLICA IDENTITY NOTHING"}[ident]
		if ident == "d" && len(cols) == 0 {
			what = "no primary key"
		}
		out = append(out, fmt.Sprintf("replica identity of %s does not include %q (%s): a row filter on %s would make every UPDATE and DELETE on it fail; fix with ALTER TABLE %s REPLICA IDENTITY USING INDEX <a unique index on (%s, ...)> or a primary key that starts with %s",
			rel, key, what, key, rel, key, key))
	}
	return out, rows.Err()
}

// diffColumns compares a source and a target table's columns by name and type.
func diffColumns(src, dst *table) []string {
	var probs []string
	names := map[string]bool{}
	for _, c := range src.Columns {
		names[c.Name] = true
		d := dst.column(c.Name)
		switch {
		case d == nil:
			probs = append(probs, fmt.Sprintf("column %q (%s) is missing on the target", c.Name, c.Type))
		case d.Type != c.Type:
			probs = append(probs, fmt.Sprintf("column %q is %s on the source but %s on the target", c.Name, c.Type, d.Type))
		case d.Generated != c.Generated:
			probs = append(probs, fmt.Sprintf("column %q is generated on one side only", c.Name))
		}
	}
	var extra []string
	for _, c := range dst.Columns {
		if !names[c.Name] {
			extra = append(extra, c.Name)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		probs = append(probs, "the target has columns the source lacks: "+strings.Join(extra, ", "))
	}
	return probs
}

// missingColumnError: the source's table has a column the target's lacks, added during the
// move (pgoutput describes the table anew with it). The catch-up waits for the target to get
// it (waitForColumn), then goes on from reshard.progress: nothing is lost.
type missingColumnError struct {
	table  *table // the target's
	column string
	ddl    string // what to run on the target, read from the source's catalog
}

func (e *missingColumnError) Error() string {
	msg := fmt.Sprintf("source: column %s was added to %s.%s on the source during the move and the target lacks it: the catch-up waits until it has it",
		ident(e.column), e.table.Schema, e.table.Rel)
	if e.ddl != "" {
		msg += "; run on the target: " + e.ddl
	}
	return msg
}

// columnDDL is the ALTER TABLE that gives the target the source's column (type, default, NOT
// NULL: a default also fills the rows the copy brought, as it did the source's).
func columnDDL(ctx context.Context, q pgmeta.Querier, t *table, column string) (string, error) {
	var typ string
	var def *string
	var notNull bool
	err := q.QueryRow(ctx, `SELECT format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped`, t.Qualified(), column).Scan(&typ, &def, &notNull)
	if err != nil {
		return "", fmt.Errorf("source: read column %s of %s: %w", column, t.Name, err)
	}
	ddl := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", t.Qualified(), ident(column), typ)
	if def != nil {
		ddl += " DEFAULT " + *def
	}
	if notNull {
		ddl += " NOT NULL"
	}
	return ddl, nil
}
