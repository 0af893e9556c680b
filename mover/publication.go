package mover

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
)

// execer runs a statement (pgx.Conn and pgxpool.Pool both are).
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// publicationSQL is the CREATE PUBLICATION of a move: every table with the range as row
// filter; changes of partitions published as their root's, so the target may be
// partitioned differently. TRUNCATE is published too, although row filters do not apply
// to it, so that the catch-up sees one and stops (see truncate.go): it is never applied.
func publicationSQL(name string, keys catalog.Keyspace, r catalog.KeyRange, tables []*table) string {
	parts := make([]string, len(tables))
	for i, t := range tables {
		parts[i] = fmt.Sprintf("TABLE %s WHERE %s", t.Qualified(), keys.Pred(t.Name, "", r))
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR %s WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)",
		pgx.Identifier{name}.Sanitize(), strings.Join(parts, ", "))
}

func dropPublication(ctx context.Context, db execer, name string) error {
	if _, err := db.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("source: drop publication %s: %w", name, err)
	}
	return nil
}
