package mover

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
)

// Preflight checks, without changing anything, that the move described by cfg can start:
// both databases reachable; wal_level=logical, a free replication slot and WAL sender, and
// connection headroom on the source; every table present on both sides with the same
// columns and types and a primary key; the source's replica identity (of each table and
// each partition) carries the key, since a row filter on a column outside it breaks every
// UPDATE and DELETE on the table; the target has every sequence behind the tables' ids
// with the source's type and direction; and the target holds no row of the range unless
// Overwrite. It returns a *PreflightError listing every problem found.
func Preflight(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	_, err := preflight(ctx, cfg)
	return err
}

// metadata is what preflight learned, reused by the copy and the apply.
type metadata struct {
	src, dst []*table // in cfg.Tables order
}

func preflight(ctx context.Context, cfg Config) (*metadata, error) {
	probs := cfg.validate()
	if len(probs) > 0 {
		return nil, &PreflightError{Problems: probs}
	}
	md := &metadata{}
	slot, pub := Names(cfg.ID)
	need := cfg.copyWorkers() + 1 // copy workers + the pooled control connection

	var seqs []pgmeta.Sequence
	if conn, err := connect(ctx, source, cfg.SourceDSN, appName(cfg.ID, "preflight")); err != nil {
		probs = append(probs, err.Error())
	} else {
		p, tables, err := checkSource(ctx, conn, cfg, slot, pub, need)
		if err == nil {
			seqs, err = sourceSequences(ctx, conn, cfg.Tables)
		}
		closeQuietly(conn)
		if err != nil {
			return nil, err
		}
		probs = append(probs, p...)
		md.src = tables
	}
	if conn, err := connect(ctx, target, cfg.TargetDSN, appName(cfg.ID, "preflight")); err != nil {
		probs = append(probs, err.Error())
	} else {
		p, tables, err := checkTarget(ctx, conn, cfg, md.src, need)
		if err == nil {
			var sp []string
			sp, err = checkSequences(ctx, conn, seqs)
			p = append(p, sp...)
		}
		closeQuietly(conn)
		if err != nil {
			return nil, err
		}
		probs = append(probs, p...)
		md.dst = tables
	}
	if len(probs) > 0 {
		return nil, &PreflightError{Problems: probs}
	}
	return md, nil
}

type serverInfo struct {
	version                   int
	walLevel                  string
	maxSlots, slots           int
	maxSenders, senders       int
	maxConns, reserved, conns int
	super, replication        bool
	slotExists, pubExists     bool
	canCreateSchema           bool
}

func readServer(ctx context.Context, q pgmeta.Querier, slot, pub string) (serverInfo, error) {
	var s serverInfo
	err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('wal_level'),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int,
		current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
		r.rolsuper, r.rolreplication,
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2),
		has_database_privilege(current_database(), 'CREATE') OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'reshard')
		FROM pg_roles r WHERE r.rolname = current_user`, slot, pub).
		Scan(&s.version, &s.walLevel, &s.maxSlots, &s.slots, &s.maxSenders, &s.senders,
			&s.maxConns, &s.reserved, &s.conns, &s.super, &s.replication, &s.slotExists, &s.pubExists, &s.canCreateSchema)
	return s, err
}

// headroom is how many more ordinary connections the server accepts once the calling
// (preflight) connection is closed, not counting superuser-reserved ones.
func (s serverInfo) headroom() int { return s.maxConns - s.reserved - (s.conns - 1) }

func checkSource(ctx context.Context, conn *pgx.Conn, cfg Config, slot, pub string, need int) ([]string, []*table, error) {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, "source: "+fmt.Sprintf(format, args...)) }
	s, err := readServer(ctx, conn, slot, pub)
	if err != nil {
		return nil, nil, fmt.Errorf("source: read server settings: %w", err)
	}
	if s.version < 150000 {
		add("PostgreSQL %d.%d is too old: row-filtered publications need PostgreSQL 15 or newer", s.version/10000, s.version%10000/100)
	}
	if s.walLevel != "logical" {
		add("wal_level is %q: set wal_level = logical in postgresql.conf and restart PostgreSQL", s.walLevel)
	}
	if !s.super && !s.replication {
		add("the role lacks the REPLICATION attribute: ALTER ROLE <role> REPLICATION (or connect as a superuser)")
	}
	if s.slotExists {
		add("replication slot %s already exists (left by an earlier run of migration %q?): cancel that migration (reshard cancel %s) or use another id", slot, cfg.ID, cfg.ID)
	} else if s.slots >= s.maxSlots {
		add("no free replication slot (%d of max_replication_slots=%d used): raise max_replication_slots or drop unused slots", s.slots, s.maxSlots)
	}
	if s.pubExists {
		add("publication %s already exists (left by an earlier run of migration %q?): cancel that migration or use another id", pub, cfg.ID)
	}
	if s.senders >= s.maxSenders {
		add("no free WAL sender (%d of max_wal_senders=%d in use): raise max_wal_senders", s.senders, s.maxSenders)
	}
	if h := s.headroom(); h < need {
		add("only %d free connections (max_connections=%d, %d in use, %d reserved) but the move needs %d: lower --workers or raise max_connections", h, s.maxConns, s.conns-1, s.reserved, need)
	}
	tables, err := forEachTable(ctx, conn, cfg.Tables, "source", "table %s does not exist", add, func(_ int, name string, t *table) error {
		key := cfg.keyspace().Column(name)
		probs = append(probs, checkTableShape("source", t, cfg.keyspace())...)
		if t.column(key) == nil {
			return nil
		}
		idp, err := identityIncludesKey(ctx, conn, t, key)
		if err != nil {
			return fmt.Errorf("source: read replica identity of %s: %w", name, err)
		}
		for _, p := range idp {
			add("%s", p)
		}
		var owner, sel bool
		if err := conn.QueryRow(ctx, `SELECT pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'SELECT')
			FROM pg_class c WHERE c.oid = $1`, t.OID).Scan(&owner, &sel); err != nil {
			return fmt.Errorf("source: read privileges on %s: %w", name, err)
		}
		if !owner && !s.super {
			add("the role does not own %s, which CREATE PUBLICATION requires: connect as its owner or a superuser", name)
		}
		if !sel {
			add("the role cannot SELECT from %s: GRANT SELECT ON %s TO <role>", name, t.Qualified())
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return probs, tables, nil
}

// forEachTable loads each of names through conn, in order, and hands it to check; one that
// does not exist is nil in the result, and add says so (missing, a format of its name) in
// its place among the problems. An error reading a table or from check ends it.
func forEachTable(ctx context.Context, conn *pgx.Conn, names []string, side, missing string, add func(string, ...any), check func(i int, name string, t *table) error) ([]*table, error) {
	var tables []*table
	for i, name := range names {
		t, err := loadTable(ctx, conn, name)
		if errors.Is(err, errNoTable) {
			add(missing, name)
			tables = append(tables, nil)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", side, err)
		}
		tables = append(tables, t)
		if err := check(i, name, t); err != nil {
			return nil, err
		}
	}
	return tables, nil
}

// checkTableShape checks what both sides need of a table: a primary key and a key column
// of the keyspace's type.
func checkTableShape(side string, t *table, keys catalog.Keyspace) []string {
	var probs []string
	key := keys.Column(t.Name)
	c := t.column(key)
	switch {
	case c == nil:
		probs = append(probs, fmt.Sprintf("%s: table %s has no sharding key column %q", side, t.Name, key))
	case !keys.KeyType().Holds(c.Type):
		probs = append(probs, fmt.Sprintf("%s: sharding key %s.%s is %s; it must be %s", side, t.Name, key, c.Type, keys.KeyType().Describe()))
	}
	if len(t.PK) == 0 {
		probs = append(probs, fmt.Sprintf("%s: table %s has no primary key: add one, e.g. ALTER TABLE %s ADD PRIMARY KEY (%s, id)", side, t.Name, t.Qualified(), key))
	}
	return probs
}

func checkTarget(ctx context.Context, conn *pgx.Conn, cfg Config, src []*table, need int) ([]string, []*table, error) {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, "target: "+fmt.Sprintf(format, args...)) }
	s, err := readServer(ctx, conn, "", "")
	if err != nil {
		return nil, nil, fmt.Errorf("target: read server settings: %w", err)
	}
	if h := s.headroom(); h < need {
		add("only %d free connections (max_connections=%d, %d in use, %d reserved) but the move needs %d: lower --workers or raise max_connections", h, s.maxConns, s.conns-1, s.reserved, need)
	}
	if !s.canCreateSchema {
		add("the role may not create the schema reshard (for reshard.progress): GRANT CREATE ON DATABASE <db> TO <role>, or create the schema beforehand")
	}
	missing := "table %s does not exist: create it with the same columns as on the source"
	tables, err := forEachTable(ctx, conn, cfg.Tables, "target", missing, add, func(i int, name string, t *table) error {
		probs = append(probs, checkTableShape("target", t, cfg.keyspace())...)
		if i < len(src) && src[i] != nil {
			for _, p := range diffColumns(src[i], t) {
				add("table %s: %s", name, p)
			}
		}
		var priv bool
		if err := conn.QueryRow(ctx, `SELECT has_table_privilege($1::oid, 'SELECT') AND has_table_privilege($1::oid, 'INSERT')
			AND has_table_privilege($1::oid, 'UPDATE') AND has_table_privilege($1::oid, 'DELETE')`, t.OID).Scan(&priv); err != nil {
			return fmt.Errorf("target: read privileges on %s: %w", name, err)
		}
		if !priv {
			add("the role needs SELECT, INSERT, UPDATE and DELETE on %s", name)
		}
		if t.column(cfg.keyspace().Column(name)) == nil || cfg.Overwrite {
			return nil
		}
		var has bool
		q := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s)", t.Qualified(), cfg.pred(t))
		if err := conn.QueryRow(ctx, q).Scan(&has); err != nil {
			return fmt.Errorf("target: look for rows of the range in %s: %w", name, err)
		}
		if has {
			add("table %s already holds rows of range %s: delete them, or pass --overwrite to have them replaced", name, cfg.Range)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return probs, tables, nil
}

func sourceSequences(ctx context.Context, conn *pgx.Conn, tables []string) ([]pgmeta.Sequence, error) {
	seqs, err := pgmeta.TableSequences(ctx, conn, tables)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return seqs, nil
}

// checkSequences checks that the target has every sequence behind the tables' ids on the
// source, of the same type and direction: the cutover brings each past the source's value
// inside the window, where a missing one would fail every attempt the same way.
func checkSequences(ctx context.Context, conn *pgx.Conn, src []pgmeta.Sequence) ([]string, error) {
	if len(src) == 0 {
		return nil, nil
	}
	names := make([]string, len(src))
	for i, s := range src {
		names[i] = s.Name
	}
	dst, err := pgmeta.NamedSequences(ctx, conn, names)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	var probs []string
	for _, p := range pgmeta.SequenceMismatches(src, dst) {
		probs = append(probs, "target: "+p)
	}
	return probs, nil
}
