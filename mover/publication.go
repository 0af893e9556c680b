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
// filter; only insert, update and delete, because row filters do not apply to TRUNCATE;
// changes of partitions published as their root's, so the target may be partitioned
// differently.
func publicationSQL(name, key string, r catalog.KeyRange, tables []*table) string {
	pred := r.SQL(pgx.Identifier{key}.Sanitize())
	parts := make([]string, len(tables))
	for i, t := range tables {
		parts[i] = fmt.Sprintf("TABLE %s WHERE %s", t.Qualified(), pred)
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR %s WITH (publish = 'insert, update, delete', publish_via_partition_root = true)",
		pgx.Identifier{name}.Sanitize(), strings.Join(parts, ", "))
}

func createPublication(ctx context.Context, db execer, name, key string, r catalog.KeyRange, tables []*table) error {
	if _, err := db.Exec(ctx, publicationSQL(name, key, r, tables)); err != nil {
		return fmt.Errorf("source: create publication %s: %w", name, err)
	}
	return nil
}

func dropPublication(ctx context.Context, db execer, name string) error {
	if _, err := db.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("source: drop publication %s: %w", name, err)
	}
	return nil
}
