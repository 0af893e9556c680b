package mover

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
	"github.com/reshard/reshard/internal/pgmeta"
)

// A TRUNCATE writes no row changes, so a move cannot follow one: it must stop. pgoutput
// publishes the TRUNCATE of a published table (and of the tables a CASCADE reaches), but
// under publish_via_partition_root not the TRUNCATE of a single partition, which removes
// rows of the root all the same. Each partition of a moved table therefore gets a
// statement trigger that emits a transactional logical message naming it and its root;
// the catch-up asks for messages and stops on one about a table of its move.
const (
	truncateTrigger = "reshard_truncate"
	truncatePrefix  = "reshard.truncate"
	// truncateLock serializes installing the triggers with removing them: the last move
	// on a source removes them only when no reshard publication is left.
	truncateLock = "SELECT pg_advisory_xact_lock(hashtext('reshard.truncate_notice'))"
	// lockWait bounds the wait for a table lock, so that a long transaction on the
	// source cannot make writers queue behind the mover's DDL.
	installLockWait = "5s"
	removeLockWait  = "200ms"
)

const truncateNoticeSQL = `
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE OR REPLACE FUNCTION reshard.truncate_notice() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
	PERFORM pg_catalog.pg_logical_emit_message(true, '` + truncatePrefix + `', pg_catalog.json_build_object(
		'root', (SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
		         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		         WHERE c.oid = pg_catalog.pg_partition_root(TG_RELID)),
		'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME)::text);
	RETURN NULL;
END
$fn$;`

// truncateNotice is the content of the message: the truncated partition and its root,
// both as schema.name.
type truncateNotice struct {
	Root  string `json:"root"`
	Table string `json:"table"`
}

// waitMaintenance takes, for the rest of tx, the lock a partition maintenance run
// (package partitions) holds on a shard while it works there, waiting for a run in
// progress. A maintenance run that started before the move therefore ends before the
// move marks the shard (publication, reshard.progress row) and takes its snapshot, and
// one that starts later sees the marks and keeps every partition (retention removes rows
// without row changes, which a move cannot follow).
func waitMaintenance(ctx context.Context, tx pgx.Tx, side role, log *slog.Logger) error {
	const key = "hashtext('reshard.partitions')"
	var got bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock("+key+")").Scan(&got); err != nil {
		return fmt.Errorf("%s: take the partition maintenance lock: %w", side, err)
	}
	if got {
		return nil
	}
	log.Warn("waiting for partition maintenance (reshard partitions apply or schedule) to finish on the " + string(side))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+key+")"); err != nil {
		return fmt.Errorf("%s: wait for partition maintenance to finish: %w", side, err)
	}
	return nil
}

// claimTarget marks the target as receiving the move before anything is copied: the
// migration's reshard.progress row (at LSN 0 until the copy ends) tells partition
// maintenance to keep the target's partitions. Its phantom rows, if any, go.
func claimTarget(ctx context.Context, db *pgxpool.Pool, id string, log *slog.Logger) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := waitMaintenance(ctx, tx, target, log); err != nil {
		return err
	}
	if err := deleteProgress(ctx, tx, id); err != nil {
		return err
	}
	if err := resetProgress(ctx, tx, id, 0); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("target: write reshard.progress: %w", err)
	}
	return nil
}

// truncatedError is the catch-up's fatal error for a TRUNCATE of the named tables.
func truncatedError(id string, tables []string) error {
	return &fatalError{fmt.Errorf("source: TRUNCATE of %s: %w: cancel the migration (reshard cancel %s) and start the move again",
		strings.Join(tables, ", "), ErrTruncated, id)}
}

// truncateMessage checks a logical decoding message: a notice of a TRUNCATE of a
// partition of one of the move's tables (keyed schema.name) is the move's end.
func truncateMessage(id, prefix string, content []byte, tables map[string]*table) error {
	if prefix != truncatePrefix {
		return nil
	}
	var n truncateNotice
	if err := json.Unmarshal(content, &n); err != nil {
		return fatalf("source: cannot read a %s message %q: %v", truncatePrefix, content, err)
	}
	if _, ok := tables[n.Root]; !ok {
		return nil
	}
	name := n.Table
	if n.Table != n.Root {
		name += " (partition of " + n.Root + ")"
	}
	return truncatedError(id, []string{name})
}

// createPublication creates the move's publication and, in the same transaction, the
// TRUNCATE triggers on the partitions of its tables that lack one: committed before the
// slot exists, they fire for every TRUNCATE the copy's snapshot does not see.
func createPublication(ctx context.Context, db *pgxpool.Pool, name string, keys catalog.Keyspace, r catalog.KeyRange, tables []*table, log *slog.Logger) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("source: create publication %s: %w", name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := waitMaintenance(ctx, tx, source, log); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+installLockWait+"'; "+truncateLock+"; "+truncateNoticeSQL); err != nil {
		return fmt.Errorf("source: create reshard.truncate_notice(): %w", err)
	}
	for _, t := range tables {
		parts, err := untriggeredPartitions(ctx, tx, t.OID)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION reshard.truncate_notice()`,
				truncateTrigger, p)); err != nil {
				return fmt.Errorf("source: create the TRUNCATE trigger on partition %s of %s: %w%s", p, t.Name, err, lockHint(err))
			}
		}
	}
	if _, err := tx.Exec(ctx, publicationSQL(name, keys, r, tables)); err != nil {
		return fmt.Errorf("source: create publication %s: %w%s", name, err, lockHint(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("source: create publication %s: %w", name, err)
	}
	return nil
}

// untriggeredPartitions lists the partitions (at every level, as quoted names) of a table
// that have no TRUNCATE trigger of reshard yet.
func untriggeredPartitions(ctx context.Context, q pgmeta.Querier, root uint32) ([]string, error) {
	parts, err := pgmeta.Strings(ctx, q, `SELECT pt.relid::regclass::text FROM pg_partition_tree($1::oid) pt
		JOIN pg_class c ON c.oid = pt.relid
		WHERE pt.relid <> $1::oid AND c.relkind IN ('r', 'p')
		  AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = pt.relid AND g.tgname = $2)
		ORDER BY 1`, root, truncateTrigger)
	if err != nil {
		return nil, fmt.Errorf("source: list partitions: %w", err)
	}
	return parts, nil
}

func lockHint(err error) string {
	if pgerr.Is(err, pgerr.LockNotAvailable) {
		return " (a long transaction holds the table: retry once it has ended)"
	}
	return ""
}

// removeTruncateTriggers drops the TRUNCATE triggers and their function once no move
// uses the source any more (no reshard publication is left). DROP TRIGGER takes an ACCESS
// EXCLUSIVE lock, so each waits only briefly; a trigger that cannot be dropped now is
// left (it only emits a message nobody reads) for the next move's end to remove.
func removeTruncateTriggers(ctx context.Context, db *pgxpool.Pool) error {
	parts, err := pgmeta.Strings(ctx, db, `SELECT tgrelid::regclass::text FROM pg_trigger
		WHERE tgname = $1 AND tgfoid = to_regprocedure('reshard.truncate_notice()') ORDER BY 1`, truncateTrigger)
	if err != nil {
		return fmt.Errorf("source: list TRUNCATE triggers: %w", err)
	}
	var left []string
	for _, p := range parts {
		inUse, err := dropUnlessInUse(ctx, db, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", truncateTrigger, p))
		if inUse {
			return nil
		}
		if err != nil {
			left = append(left, p)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("source: could not drop the TRUNCATE trigger %s on %s now: it does no harm, the next move's end tries again (or DROP TRIGGER %s ON ... yourself)",
			truncateTrigger, strings.Join(left, ", "), truncateTrigger)
	}
	_, err = dropUnlessInUse(ctx, db, "DROP FUNCTION IF EXISTS reshard.truncate_notice()")
	return err
}

// dropUnlessInUse runs one DROP in its own transaction under the triggers' lock, unless a
// reshard publication (a move) still exists on the source.
func dropUnlessInUse(ctx context.Context, db *pgxpool.Pool, stmt string) (inUse bool, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+removeLockWait+"'; "+truncateLock); err != nil {
		return false, err
	}
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname LIKE 'reshard\_%')`).Scan(&inUse); err != nil || inUse {
		return inUse, err
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return false, err
	}
	return false, tx.Commit(ctx)
}

// removeTruncateTriggersQuietly is removeTruncateTriggers at a move's end, where a
// leftover trigger is only worth a warning.
func (m *Mover) removeTruncateTriggersQuietly(ctx context.Context, src *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := removeTruncateTriggers(ctx, src); err != nil {
		m.log.Warn("remove TRUNCATE triggers", "err", err)
	}
}
