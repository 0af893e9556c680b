package pgmeta

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Sequence is a sequence behind a sharded table's ids, as one shard has it.
type Sequence struct {
	Name      string // schema-qualified, quoted
	Type      string // smallint, integer or bigint
	Increment int64  // negative: it hands out ever smaller values
	Min, Max  int64
	Last      int64 // the last value handed out; meaningful only if Used
	Used      bool  // false for a sequence that never handed out a value
}

// Descending reports whether s hands out ever smaller values.
func (s Sequence) Descending() bool { return s.Increment < 0 }

// Direction names the way s moves, for messages.
func (s Sequence) Direction() string {
	if s.Descending() {
		return "descending"
	}
	return "ascending"
}

// sequencesSQL lists the sequences behind the tables' ids, in one round trip. It follows
// the catalog's dependencies rather than pg_get_serial_sequence, which only knows
// sequences a column owns: a column default records a dependency on every sequence its
// expression names (nextval('x') of a sequence shared by many tables, in any expression),
// and an identity or serial column's sequence depends on its table. The defaults of
// partitions count too (a partition can have its own).
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
SELECT format('%I.%I', n.nspname, c.relname), format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax,
	pg_sequence_last_value(c.oid)
FROM seq JOIN pg_class c ON c.oid = seq.oid AND c.relkind = 'S'
JOIN pg_sequence s ON s.seqrelid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1`

// namedSequencesSQL reads the named sequences that exist on this shard as sequences.
const namedSequencesSQL = `
SELECT u.name, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, pg_sequence_last_value(s.seqrelid)
FROM unnest($1::text[]) AS u(name)
JOIN pg_sequence s ON s.seqrelid = to_regclass(u.name)`

// TableSequences lists the sequences behind the tables' column defaults and identity
// columns, owned or not, as this shard has them.
func TableSequences(ctx context.Context, db Querier, tables []string) ([]Sequence, error) {
	seqs, err := scanSequences(db.Query(ctx, sequencesSQL, pgx.QueryExecModeExec, catalog.QuoteTables(tables)))
	if err != nil {
		return nil, fmt.Errorf("list the sequences behind %v: %w", tables, err)
	}
	return seqs, nil
}

// NamedSequences reads the named sequences (schema-qualified, quoted) on this shard, by
// name; a name that is no sequence here is absent from the map.
func NamedSequences(ctx context.Context, db Querier, names []string) (map[string]Sequence, error) {
	seqs, err := scanSequences(db.Query(ctx, namedSequencesSQL, pgx.QueryExecModeExec, names))
	if err != nil {
		return nil, fmt.Errorf("read sequences %v: %w", names, err)
	}
	out := make(map[string]Sequence, len(seqs))
	for _, s := range seqs {
		out[s.Name] = s
	}
	return out, nil
}

func scanSequences(rows pgx.Rows, err error) ([]Sequence, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sequence
	for rows.Next() {
		var s Sequence
		var last *int64
		if err := rows.Scan(&s.Name, &s.Type, &s.Increment, &s.Min, &s.Max, &last); err != nil {
			return nil, err
		}
		if last != nil {
			s.Last, s.Used = *last, true
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// SequenceMismatches says, one line each, what a target lacks of the source's sequences
// for the ids it hands out after a move never to collide with moved rows: the sequence
// itself, its type and its direction (SyncSequences brings the target's past the
// source's in that direction), and room for the source's last value.
func SequenceMismatches(src []Sequence, dst map[string]Sequence) []string {
	var out []string
	for _, s := range src {
		d, ok := dst[s.Name]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("sequence %s does not exist: create it as on the source (CREATE SEQUENCE %s AS %s INCREMENT BY %d MINVALUE %d MAXVALUE %d)",
				s.Name, s.Name, s.Type, s.Increment, s.Min, s.Max))
		case d.Descending() != s.Descending():
			out = append(out, fmt.Sprintf("sequence %s is %s on the source but %s on the target: ALTER SEQUENCE %s INCREMENT BY %d as on the source",
				s.Name, s.Direction(), d.Direction(), s.Name, s.Increment))
		case d.Type != s.Type:
			out = append(out, fmt.Sprintf("sequence %s is %s on the source but %s on the target: ALTER SEQUENCE %s AS %s as on the source",
				s.Name, s.Type, d.Type, s.Name, s.Type))
		case s.Used && (s.Last < d.Min || s.Last > d.Max):
			out = append(out, fmt.Sprintf("sequence %s is at %d on the source, outside the target's bounds %d..%d: ALTER SEQUENCE %s MINVALUE %d MAXVALUE %d as on the source",
				s.Name, s.Last, d.Min, d.Max, s.Name, s.Min, s.Max))
		}
	}
	return out
}
