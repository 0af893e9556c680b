package partitions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// errTable is a problem with one table's shape on a shard: reported for that table, the
// others go on.
type errTable struct{ msg string }

func (e errTable) Error() string { return e.msg }

// discover reads one partitioned table and its partitions from the system catalogs, in
// one read-only transaction so every answer is from the same moment. Bounds are read from
// pg_get_expr(relpartbound) printed under TimeZone=UTC and DateStyle=ISO; names are never
// trusted to say what a partition holds.
func discover(ctx context.Context, conn *pgx.Conn, s spec, now time.Time, lockTimeout time.Duration) (*tableInfo, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	ti, nsOID, err := readTable(ctx, tx, s)
	if err != nil {
		return nil, err
	}
	if err := readPartitions(ctx, tx, ti); err != nil {
		return nil, err
	}
	if err := readTakenNames(ctx, tx, ti, s, now, nsOID); err != nil {
		return nil, err
	}
	return ti, tx.Commit(ctx)
}

// readTable reads the partitioned table itself and checks that it is partitioned by range
// on the spec's date column; it returns the table and the oid of its schema.
func readTable(ctx context.Context, tx pgx.Tx, s spec) (*tableInfo, uint32, error) {
	ti := &tableInfo{name: s.Table}
	var (
		found                   bool
		nsOID                   uint32
		relkind, strat, attname string
		typ, grantsJSON, riName string
		natts                   int16
		keyAttnum               int16
	)
	err := tx.QueryRow(ctx, `
SELECT true, c.oid, c.relnamespace, n.nspname, c.relname::text, c.relkind::text, pg_get_userbyid(c.relowner), c.relreplident::text,
       coalesce(pt.partstrat::text, ''), coalesce(pt.partnatts, 0::int2), coalesce(pt.partattrs[0], 0::int2),
       coalesce(a.attname::text, ''), coalesce(format_type(a.atttypid, a.atttypmod), ''),
       coalesce((SELECT x.indexrelid FROM pg_index x WHERE x.indrelid = c.oid AND x.indisreplident), 0::oid),
       coalesce((SELECT ic.relname::text FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident), ''),
       coalesce((SELECT json_agg(json_build_object('grantee', coalesce(r.rolname::text, 'PUBLIC'), 'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY r.rolname, a.privilege_type)
                 FROM aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE a.grantee <> c.relowner), '[]')::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
WHERE c.oid = to_regclass($1)`, catalog.QuoteTable(s.Table)).Scan(&found, &ti.oid, &nsOID, &ti.schema, &ti.name, &relkind, &ti.owner, &ti.replIdent,
		&strat, &natts, &keyAttnum, &attname, &typ, &ti.riIndex, &riName, &grantsJSON)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, 0, errTable{fmt.Sprintf("table %s not found on this shard (search_path): create it with PARTITION BY RANGE (%s), or remove its partitions spec from the catalog config", s.Table, s.Column)}
	case err != nil:
		return nil, 0, fmt.Errorf("read table %s from the catalog: %w", s.Table, err)
	}
	ti.riIndexName = riName
	switch {
	case relkind != "p":
		return nil, 0, errTable{fmt.Sprintf("%s.%s is not a partitioned table: reshard maintains tables created with PARTITION BY RANGE (%s); turning a plain table into one is a migration of its own", ti.schema, s.Table, s.Column)}
	case strat != "r":
		return nil, 0, errTable{fmt.Sprintf("%s.%s is partitioned by %s, not by range: date partitions need PARTITION BY RANGE (%s)", ti.schema, s.Table, map[string]string{"l": "list", "h": "hash"}[strat], s.Column)}
	case natts != 1 || keyAttnum == 0:
		return nil, 0, errTable{fmt.Sprintf("%s.%s's partition key is not the single column %s (it has %d columns or an expression): fix the spec or the table", ti.schema, s.Table, s.Column, natts)}
	case attname != s.Column:
		return nil, 0, errTable{fmt.Sprintf("%s.%s is partitioned by column %s, but the spec says %s: fix column: in the partitions spec", ti.schema, s.Table, attname, s.Column)}
	}
	kind, ok := kindOf(typ)
	if !ok {
		return nil, 0, errTable{fmt.Sprintf("%s.%s: partition column %s is %s: date partitions need date, timestamp or timestamptz", ti.schema, s.Table, s.Column, typ)}
	}
	ti.column = s.Column
	ti.clock = newClock(kind, s.zone)
	if err := json.Unmarshal([]byte(grantsJSON), &ti.grants); err != nil {
		return nil, 0, fmt.Errorf("read grants of %s: %w", s.Table, err)
	}
	return ti, nsOID, nil
}

// readPartitions reads every partition of the table with its bound, its default partition
// among them.
func readPartitions(ctx context.Context, tx pgx.Tx, ti *tableInfo) error {
	rows, err := tx.Query(ctx, `
SELECT n.nspname, c.relname, c.oid, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending,
       pg_get_userbyid(c.relowner), c.relreplident::text,
       coalesce((SELECT pi.inhparent FROM pg_index x JOIN pg_inherits pi ON pi.inhrelid = x.indexrelid
                 WHERE x.indrelid = c.oid AND x.indisreplident LIMIT 1), 0::oid),
       coalesce((SELECT json_agg(json_build_object('grantee', coalesce(r.rolname::text, 'PUBLIC'), 'privilege', a.privilege_type, 'grantable', a.is_grantable) ORDER BY r.rolname, a.privilege_type)
                 FROM aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE a.grantee <> c.relowner), '[]')::text
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = $1
ORDER BY c.relname`, ti.oid)
	if err != nil {
		return fmt.Errorf("read partitions of %s: %w", ti.name, err)
	}
	for rows.Next() {
		var c child
		var expr, gj string
		if err := rows.Scan(&c.schema, &c.name, &c.oid, &expr, &c.pending, &c.owner, &c.replIdent, &c.riParentIndex, &gj); err != nil {
			rows.Close()
			return fmt.Errorf("read partitions of %s: %w", ti.name, err)
		}
		if err := json.Unmarshal([]byte(gj), &c.grants); err != nil {
			rows.Close()
			return fmt.Errorf("read grants of %s: %w", c.name, err)
		}
		from, to, isDef, err := ti.clock.parseBoundExpr(expr)
		switch {
		case err != nil:
			c.badBound = expr
		case isDef:
			c.isDefault = true
		default:
			c.from, c.to = from, to
		}
		ti.children = append(ti.children, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read partitions of %s: %w", ti.name, err)
	}
	for i := range ti.children {
		if ti.children[i].isDefault {
			ti.def = &ti.children[i]
		}
	}
	return nil
}

// readTakenNames finds which of the names premake would use are already taken by some
// relation in the table's schema (nsOID).
func readTakenNames(ctx context.Context, tx pgx.Tx, ti *tableInfo, s spec, now time.Time, nsOID uint32) error {
	cur := periodStart(ti.clock.now(now), s.Interval, ti.clock.loc)
	var cand []string
	for k := 0; k <= s.premake; k++ {
		cand = append(cand, partitionName(ti.name, addPeriods(cur, s.Interval, k)))
	}
	ti.taken = map[string]bool{}
	rows, err := tx.Query(ctx, `SELECT relname::text FROM pg_class WHERE relnamespace = $1 AND relname = ANY($2::text[])`, nsOID, cand)
	if err != nil {
		return fmt.Errorf("read relation names of %s: %w", ti.schema, err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		ti.taken[n] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read relation names of %s: %w", ti.schema, err)
	}
	return nil
}
