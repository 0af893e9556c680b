package cutover

import (
	"context"
	"fmt"
)

// Sequence is a sequence owned by (or the default of) a sharded table's column.
type Sequence struct {
	Name  string // schema-qualified, quoted
	Value int64
}

// tableSequences lists the sequences behind the tables' column defaults and identity
// columns, with their last value on this shard.
func tableSequences(ctx context.Context, db Querier, tables []string) (map[string]int64, error) {
	rows, err := db.Query(ctx, `
		SELECT DISTINCT format('%I.%I', s.schemaname, s.sequencename), coalesce(s.last_value, 0)
		FROM unnest($1::text[]) AS t(name)
		CROSS JOIN LATERAL (
			SELECT pg_get_serial_sequence(quote_ident(t.name), a.attname) AS seq
			FROM pg_attribute a
			WHERE a.attrelid = to_regclass(quote_ident(t.name)) AND a.attnum > 0 AND NOT a.attisdropped
		) q
		JOIN pg_sequences s ON format('%I.%I', s.schemaname, s.sequencename)::regclass = q.seq::regclass
		WHERE q.seq IS NOT NULL`, tables)
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

// SyncSequences raises every sequence behind the tables on the target to at least the
// source's value. Logical replication does not carry sequence values, so without this an
// id issued on the target after the flip could collide with a moved row.
func SyncSequences(ctx context.Context, src, dst Querier, tables []string) ([]Sequence, error) {
	sv, err := tableSequences(ctx, src, tables)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	var out []Sequence
	for name, v := range sv {
		if v <= 0 {
			continue
		}
		// setval to the greater of the two, in one statement, so concurrent nextval
		// calls on the target are never moved backwards.
		var got int64
		err := dst.QueryRow(ctx, `SELECT setval($1::regclass, greatest($2::bigint, (SELECT coalesce(last_value, 0) FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename)::regclass = $1::regclass)))`,
			name, v).Scan(&got)
		if err != nil {
			return out, fmt.Errorf("cutover: raise sequence %s on the target to %d: %w", name, v, err)
		}
		out = append(out, Sequence{Name: name, Value: got})
	}
	return out, nil
}
