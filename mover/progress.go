package mover

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/pgerr"
	"github.com/reshard/reshard/internal/pgmeta"
)

// reshard.progress on the target records, per migration, the end LSN of the last source
// transaction applied. The apply writes it in the same target transaction as the changes,
// so after any crash it says exactly what the target holds.
const progressDDL = `CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.progress (
	migration  text PRIMARY KEY,
	lsn        pg_lsn NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS reshard.phantoms (
	migration text NOT NULL,
	tbl       text NOT NULL,
	key       text[] NOT NULL,
	PRIMARY KEY (migration, tbl, key)
)`

// reshard.phantoms lists, per migration, rows that exist at the applied position of the
// stream but are not on the target yet (see applier.upsert). It changes in the same target
// transactions as the rows, so a resumed apply knows them too.
const (
	phantomInsert = `INSERT INTO reshard.phantoms (migration, tbl, key) VALUES ($1, $2, $3::text[]) ON CONFLICT DO NOTHING`
	phantomDelete = `DELETE FROM reshard.phantoms WHERE migration = $1 AND tbl = $2 AND key = $3::text[]`
)

// progressUpsert advances the row; the guard makes a second applier (another process
// with the same migration id) fail loudly instead of writing behind the first.
const progressUpsert = `INSERT INTO reshard.progress (migration, lsn, updated_at) VALUES ($1, $2::pg_lsn, now())
ON CONFLICT (migration) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = EXCLUDED.updated_at
WHERE reshard.progress.lsn < EXCLUDED.lsn`

func ensureProgressTable(ctx context.Context, db execer) error {
	for attempt := 0; ; attempt++ {
		_, err := db.Exec(ctx, progressDDL)
		// Two movers creating the schema at once race on the catalog's unique index.
		if pgerr.Is(err, pgerr.UniqueViolation) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("target: create reshard.progress: %w", err)
		}
		return nil
	}
}

// readProgress returns the migration's applied LSN on the target, if any.
func readProgress(ctx context.Context, q pgmeta.Querier, id string) (pglogrepl.LSN, bool, error) {
	var s string
	err := q.QueryRow(ctx, `SELECT lsn::text FROM reshard.progress WHERE migration = $1`, id).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) || pgerr.Is(err, pgerr.UndefinedTable) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("target: read reshard.progress: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	return lsn, err == nil, err
}

// resetProgress sets the row to lsn unconditionally (the start of catch-up after a copy).
func resetProgress(ctx context.Context, db execer, id string, lsn pglogrepl.LSN) error {
	_, err := db.Exec(ctx, `INSERT INTO reshard.progress (migration, lsn, updated_at) VALUES ($1, $2::pg_lsn, now())
		ON CONFLICT (migration) DO UPDATE SET lsn = EXCLUDED.lsn, updated_at = EXCLUDED.updated_at`, id, lsn.String())
	if err != nil {
		return fmt.Errorf("target: write reshard.progress: %w", err)
	}
	return nil
}

// deleteProgress removes the migration's rows from reshard.progress and reshard.phantoms.
func deleteProgress(ctx context.Context, db execer, id string) error {
	for _, tbl := range []string{"reshard.progress", "reshard.phantoms"} {
		_, err := db.Exec(ctx, `DELETE FROM `+tbl+` WHERE migration = $1`, id)
		if err != nil && !pgerr.Is(err, pgerr.UndefinedTable, pgerr.InvalidSchemaName) {
			return fmt.Errorf("target: delete the migration's rows from %s: %w", tbl, err)
		}
	}
	return nil
}

// loadPhantoms reads the migration's phantom rows, keyed as the applier keys them.
func loadPhantoms(ctx context.Context, q pgmeta.Querier, id string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT tbl, key FROM reshard.phantoms WHERE migration = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("target: read reshard.phantoms: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var tbl string
		var key []string
		if err := rows.Scan(&tbl, &key); err != nil {
			return nil, fmt.Errorf("target: read reshard.phantoms: %w", err)
		}
		vals := make([][]byte, len(key))
		for i, k := range key {
			vals[i] = []byte(k)
		}
		out[phantomKeyOf(tbl, vals)] = true
	}
	return out, rows.Err()
}
