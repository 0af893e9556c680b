package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/pgmeta"
)

// Sequence is a sequence a sharded table's column defaults call, or that an identity or
// serial column owns, with the value it is at on the target.
type Sequence struct {
	Name  string // schema-qualified, quoted
	Value int64
}

// passSQL brings each named sequence past the given value in the sequence's own
// direction (up for an ascending one, down for a descending one, as inc's sign says), all
// in one round trip, and returns the value each is at and its increment on this shard. A
// sequence already past the value is left alone: setval to a value it has already passed
// would move it backwards, and a concurrent nextval can only race a setval that moves the
// sequence forwards. A sequence never used counts as at its start less one increment (in
// numeric: that may be beyond bigint). One missing here, or running the other way, is
// left alone and comes back with a NULL increment or one of the other sign.
const passSQL = `
SELECT u.name, s.seqincrement, (CASE
	WHEN s.seqrelid IS NULL OR sign(s.seqincrement) <> sign(u.inc) THEN NULL
	WHEN (u.inc > 0 AND u.v > t.at) OR (u.inc < 0 AND u.v < t.at) THEN setval(s.seqrelid, u.v)::numeric
	ELSE t.at END)::bigint
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(name, v, inc)
LEFT JOIN pg_sequence s ON s.seqrelid = to_regclass(u.name)
LEFT JOIN LATERAL (SELECT coalesce(pg_sequence_last_value(s.seqrelid)::numeric, s.seqstart::numeric - s.seqincrement) AS at) t ON true`

// warmSequences reads the sequences on both shards, before the freeze, so that the
// statements of SyncSequences find their catalog entries loaded. Errors are ignored.
func warmSequences(ctx context.Context, src, dst Querier, tables []string) {
	sv, err := pgmeta.TableSequences(ctx, src, tables)
	if err != nil || len(sv) == 0 {
		return
	}
	names := make([]string, 0, len(sv))
	for _, s := range sv {
		names = append(names, s.Name)
	}
	_, _ = pgmeta.NamedSequences(ctx, dst, names)
}

// SyncSequences brings every sequence behind the tables on the target past the source's
// last value, in the sequence's own direction (a descending sequence goes down to it),
// never backwards. Logical replication does not carry sequence values, so without this an
// id issued on the target after the flip could collide with a moved row. It takes two
// round trips: one per shard. A sequence the target lacks or that runs the other way there
// is an error (the mover's preflight refuses such a move before it starts).
func SyncSequences(ctx context.Context, src, dst Querier, tables []string) ([]Sequence, error) {
	sv, err := pgmeta.TableSequences(ctx, src, tables)
	if err != nil {
		return nil, fmt.Errorf("cutover: source: %w", err)
	}
	var names []string
	var vals, incs []int64
	for _, s := range sv {
		if s.Used { // one that never handed out a value has nothing to protect
			names, vals, incs = append(names, s.Name), append(vals, s.Last), append(incs, s.Increment)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	out, err := passSequences(ctx, dst, names, vals, incs)
	if err != nil {
		return out, fmt.Errorf("cutover: bring sequences %v on the target past the source's %v: %w", names, vals, err)
	}
	return out, nil
}

// passSequences runs passSQL on the target and checks that every sequence was there and
// ran the source's way.
func passSequences(ctx context.Context, dst Querier, names []string, vals, incs []int64) ([]Sequence, error) {
	rows, err := dst.Query(ctx, passSQL, pgx.QueryExecModeExec, names, vals, incs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	inc0 := make(map[string]int64, len(names))
	for i, n := range names {
		inc0[n] = incs[i]
	}
	var out []Sequence
	var bad []string
	for rows.Next() {
		var s Sequence
		var inc, at *int64
		if err := rows.Scan(&s.Name, &inc, &at); err != nil {
			return out, err
		}
		switch {
		case inc == nil:
			bad = append(bad, fmt.Sprintf("%s does not exist on the target: create it as on the source", s.Name))
		case at == nil:
			bad = append(bad, fmt.Sprintf("%s runs by %d on the target but by %d on the source: ALTER SEQUENCE %s INCREMENT BY %d on the target", s.Name, *inc, inc0[s.Name], s.Name, inc0[s.Name]))
		default:
			s.Value = *at
			out = append(out, s)
		}
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	if len(bad) > 0 {
		return out, errors.New(strings.Join(bad, "; "))
	}
	return out, nil
}
