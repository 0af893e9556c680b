package cutover

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
	"github.com/reshard/reshard/internal/pgmeta"
)

// FenceSQLState is the SQLSTATE a fenced write fails with (pgerr.Fenced). Class "RS" is
// not used by PostgreSQL, so an application can match it exactly and retry after
// re-resolving the tenant's shard.
const FenceSQLState = pgerr.Fenced

// BypassSetting is the custom setting that lets a session through the fence. Only
// reshard's own connections set it (the source cleanup deletes fenced rows).
const BypassSetting = "reshard.bypass"

// IsFenceError reports whether err is a write rejected by a reshard fence.
func IsFenceError(err error) bool {
	return pgerr.Is(err, pgerr.Fenced)
}

// Execer is the part of a pgx connection the fence needs.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Querier runs queries that return rows.
type Querier interface {
	Execer
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaSQL creates the reshard schema and the fence table. A fence row with lo NULL is
// unbounded below, hi NULL unbounded above.
//
// token is the fencing token of the driver that wrote the row (its migration lock's
// token): a driver that lost its lock to a newer one has a smaller token, and the
// statements below refuse to let it change or remove a newer driver's row.
const schemaSQL = `
CREATE SCHEMA IF NOT EXISTS reshard;
CREATE TABLE IF NOT EXISTS reshard.fence (
	migration  text PRIMARY KEY,
	lo         bigint,
	hi         bigint,
	created_at timestamptz NOT NULL DEFAULT now(),
	tombstone  boolean NOT NULL DEFAULT false
);
ALTER TABLE reshard.fence ADD COLUMN IF NOT EXISTS token bigint NOT NULL DEFAULT 0;`

// guardFunction is the trigger function of the tables whose key is in column col:
// reshard.fence_guard() for the keyspace's default column, reshard.fence_guard_<hash of
// col>() for another.
func guardFunction(keys catalog.Keyspace, col string) string {
	if col == keys.Key {
		return "reshard.fence_guard"
	}
	h := fnv.New32a()
	h.Write([]byte(col))
	return fmt.Sprintf("reshard.fence_guard_%08x", h.Sum32())
}

// guardSQL is the trigger function of the tables keyed by column col. The column and the
// position expression (the key, or its hash) are written into the function rather than
// looked up per row: a dynamic lookup (to_jsonb(NEW)->>col) would cost far more on every
// write. The empty-fence case, which is all writes outside a cutover, is one index-only
// probe of an empty table.
func guardSQL(keys catalog.Keyspace, col string) string {
	k := pgx.Identifier{col}.Sanitize()
	hashed := ""
	if keys.Hashed() {
		hashed = " (hash %)" // the fence's bounds are hashes: say which one
	}
	return fmt.Sprintf(`
CREATE OR REPLACE FUNCTION %[4]s() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
	k bigint;
BEGIN
	IF current_setting('%[2]s', true) = 'on' THEN
		RETURN COALESCE(NEW, OLD);
	END IF;
	FOR i IN 1..2 LOOP
		IF i = 1 AND TG_OP IN ('INSERT', 'UPDATE') THEN
			k := %[5]s;
		ELSIF i = 2 AND TG_OP IN ('UPDATE', 'DELETE') THEN
			k := %[6]s;
		ELSE
			CONTINUE;
		END IF;
		IF EXISTS (SELECT 1 FROM reshard.fence f
		           WHERE (f.lo IS NULL OR k >= f.lo) AND (f.hi IS NULL OR k < f.hi)) THEN
			RAISE EXCEPTION 'reshard: writes to %[1]s %%%[7]s are fenced: the range is moving or has moved to another shard; re-resolve the shard and retry',
				CASE WHEN i = 1 THEN NEW.%[1]s::text ELSE OLD.%[1]s::text END%[8]s
				USING ERRCODE = '%[3]s',
				      HINT = 'Ask the catalog (reshard resolver) which shard owns this key now.';
		END IF;
	END LOOP;
	RETURN COALESCE(NEW, OLD);
END
$fn$;`, k, BypassSetting, FenceSQLState, guardFunction(keys, col),
		keys.PositionOf("NEW."+k), keys.PositionOf("OLD."+k), hashed, map[bool]string{true: ", k", false: ""}[keys.Hashed()])
}

// guardTrigger creates (or replaces) the guard trigger on table t and enables it ALWAYS:
// an ordinary (ORIGIN) trigger does not fire in sessions with session_replication_role =
// replica (logical replication apply workers, pg_restore --disable-triggers, tools that
// set it), which would write through the fence unseen. CREATE OR REPLACE resets the
// trigger to ORIGIN, so the ALTER always follows it; both recurse to the partitions of a
// partitioned table, and partitions created later inherit the ALWAYS state. The WHEN
// condition lets reshard's own sessions (the copy and the apply on a target, the cleanup
// on a source) through without a PL/pgSQL call per row: about 1 µs a row, a second per
// million rows copied.
func guardTrigger(t, fn string) string {
	return fmt.Sprintf(`CREATE OR REPLACE TRIGGER reshard_fence BEFORE INSERT OR UPDATE OR DELETE ON %[1]s
	FOR EACH ROW WHEN (current_setting('%[2]s', true) IS DISTINCT FROM 'on')
	EXECUTE FUNCTION %[3]s();
ALTER TABLE %[1]s ENABLE ALWAYS TRIGGER reshard_fence`, catalog.QuoteTable(t), BypassSetting, fn)
}

// guardMissingWhere is true for a table t (a quoted name, catalog.QuoteTable) whose guard
// is not as guardTrigger makes it, on the table or on any of its partitions
// (pg_partition_tree lists nothing for a plain table). A missing table counts too, so that
// creating its trigger fails with PostgreSQL's message.
const guardMissingWhere = `to_regclass(t) IS NULL
   OR EXISTS (SELECT 1 FROM (SELECT to_regclass(t) AS relid
                             UNION SELECT relid FROM pg_partition_tree(to_regclass(t))) p
              WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g
                                WHERE g.tgrelid = p.relid AND g.tgname = 'reshard_fence'
                                  AND g.tgenabled = 'A' AND g.tgqual IS NOT NULL))`

// guardMissingSQL lists the tables of $1 whose guard is not in place.
const guardMissingSQL = `SELECT t FROM unnest($1::text[]) AS t WHERE ` + guardMissingWhere

// InstallGuard creates the fence table, the guard function and the trigger on every
// table. It is idempotent and is run at migration start, so the cutover itself takes no
// DDL lock: CREATE TRIGGER needs a SHARE ROW EXCLUSIVE lock, which would queue behind long
// transactions at exactly the wrong moment. Tables whose guard is already in place are
// left alone: no lock is taken on them. Each table's trigger waits for its lock as
// DefaultLockRetry says; a table whose lock is not granted fails the install with
// ErrLockNotGranted (the tables done before keep their trigger: a re-run does the rest).
func InstallGuard(ctx context.Context, db Conn, keys catalog.Keyspace, tables []string) error {
	return installGuard(ctx, db, keys, tables, DefaultLockRetry)
}

func installGuard(ctx context.Context, db Conn, keys catalog.Keyspace, tables []string, lr LockRetry) error {
	if _, err := db.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("cutover: create reshard.fence: %w", err)
	}
	made := map[string]bool{}
	byQuoted := map[string]string{}
	for _, t := range tables {
		byQuoted[catalog.QuoteTable(t)] = t
		if col := keys.Column(t); !made[col] {
			made[col] = true
			if _, err := db.Exec(ctx, guardSQL(keys, col)); err != nil {
				return fmt.Errorf("cutover: create %s(): %w", guardFunction(keys, col), err)
			}
		}
	}
	missing, err := guardMissing(ctx, db, tables)
	if err != nil {
		return err
	}
	for _, t := range missing {
		fn := guardFunction(keys, keys.Column(byQuoted[t]))
		err := lr.inTx(ctx, db, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, guardTrigger(t, fn))
			return err
		})
		if errors.Is(err, ErrLockNotGranted) {
			return fmt.Errorf("cutover: install fence trigger on %s: %w; nothing was changed on %s: end that transaction and run again", t, err, t)
		}
		if err != nil {
			return fmt.Errorf("cutover: install fence trigger on %s: %w", t, err)
		}
	}
	return nil
}

// guardMissing returns the tables (quoted names) whose guard trigger is missing or not as
// guardTrigger makes it.
func guardMissing(ctx context.Context, db Querier, tables []string) ([]string, error) {
	missing, err := pgmeta.Strings(ctx, db, guardMissingSQL, catalog.QuoteTables(tables))
	if err != nil {
		return nil, fmt.Errorf("cutover: look for the fence triggers: %w", err)
	}
	return missing, nil
}

// RemoveGuard drops the triggers and the function once the shard needs them no more: no
// fence row is left on it, and inUse (nil: not asked) finds no reason to keep them, such
// as another unfinished migration that has the shard as its source or target and will
// fence it at its cutover. It returns why it kept them ("" when it removed them, or when
// nothing was installed), including when a table's lock was not granted in time (see
// DefaultLockRetry): the guard then stays whole, and a later removal tries again.
//
// The last checks and the drops are one transaction that holds reshard.fence in SHARE
// mode: a SetFence running meanwhile waits for it and then, its statement's snapshot
// taken after that wait, finds the triggers gone and fails its check.
func RemoveGuard(ctx context.Context, db Conn, tables []string, inUse func(context.Context) (string, error)) (kept string, err error) {
	return removeGuard(ctx, db, tables, inUse, DefaultLockRetry)
}

func removeGuard(ctx context.Context, db Conn, tables []string, inUse func(context.Context) (string, error), lr LockRetry) (string, error) {
	// A look without locks first: keeping the guard is the common answer while other
	// migrations run, and the drops below hold every table's ACCESS EXCLUSIVE lock.
	if kept, err := guardKept(ctx, db, inUse); kept != "" || err != nil {
		return noGuard(kept, err)
	}
	var kept string
	err := lr.inTx(ctx, db, func(tx pgx.Tx) error {
		kept = ""
		for _, t := range tables {
			if _, err := tx.Exec(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS reshard_fence ON %s`, catalog.QuoteTable(t))); err != nil {
				return fmt.Errorf("drop fence trigger on %s: %w", t, err)
			}
		}
		if err := dropGuardFunctions(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE reshard.fence IN SHARE MODE`); err != nil {
			return err
		}
		var err error
		if kept, err = guardKept(ctx, tx, inUse); kept != "" && err == nil {
			return errKept // roll the drops back
		}
		return err
	})
	switch {
	case errors.Is(err, errKept):
		return kept, nil
	case errors.Is(err, ErrLockNotGranted):
		return fmt.Sprintf("%v; the guard stays (one trigger call per write) until a later cleanup --drop-fence, cancel or rollback on the shard removes it", err), nil
	}
	return noGuard("", err)
}

// dropGuardFunctions drops reshard.fence_guard() and the guard functions of other key
// columns (guardFunction).
func dropGuardFunctions(ctx context.Context, tx pgx.Tx) error {
	fns, err := pgmeta.Strings(ctx, tx, `SELECT p.oid::regprocedure::text FROM pg_proc p
		WHERE p.pronamespace = to_regnamespace('reshard') AND p.proname ~ '^fence_guard(_[0-9a-f]{8})?$'`)
	if err != nil {
		return fmt.Errorf("list the guard functions: %w", err)
	}
	for _, fn := range fns {
		if _, err := tx.Exec(ctx, `DROP FUNCTION IF EXISTS `+fn); err != nil {
			return fmt.Errorf("drop %s: %w", fn, err)
		}
	}
	return nil
}

// errKept ends RemoveGuard's transaction without dropping anything.
var errKept = errors.New("guard kept")

// guardKept says why the guard must stay: fences left on the shard, or inUse's reason.
func guardKept(ctx context.Context, db Querier, inUse func(context.Context) (string, error)) (string, error) {
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM reshard.fence`).Scan(&n); err != nil {
		return "", err
	}
	if n > 0 {
		return fmt.Sprintf("%d fence(s) left on the shard (see reshard.fence)", n), nil
	}
	if inUse == nil {
		return "", nil
	}
	return inUse(ctx)
}

// noGuard maps "reshard.fence does not exist" (nothing was ever installed) to nothing to do.
func noGuard(kept string, err error) (string, error) {
	if pgerr.Is(err, pgerr.UndefinedTable) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cutover: remove the fence guard: %w", err)
	}
	return kept, nil
}

func bounds(r catalog.KeyRange) (lo, hi *int64) {
	if !r.LoUnbounded() {
		v := r.Lo
		lo = &v
	}
	if !r.HiInf {
		v := r.Hi
		hi = &v
	}
	return lo, hi
}

// setFenceSQL inserts (or re-arms) a migration's fence row as the driver with token $5 and,
// in the same statement, lists the tables of $4 whose guard is not in place: a fence
// without its trigger would stop no write. A row a newer driver (a greater token) wrote
// is left alone, and the first column says how many rows were written (0: stale driver).
// The check's snapshot is taken after the INSERT's lock on reshard.fence is granted, so a
// RemoveGuard that held it has committed its drops by then.
const setFenceSQL = `WITH f AS (
	INSERT INTO reshard.fence (migration, lo, hi, token) VALUES ($1, $2, $3, $5)
	ON CONFLICT (migration) DO UPDATE SET lo = EXCLUDED.lo, hi = EXCLUDED.hi, tombstone = false, token = EXCLUDED.token
	WHERE reshard.fence.token <= EXCLUDED.token
	RETURNING 1)
SELECT (SELECT count(*) FROM f), coalesce(array_agg(t), '{}') FROM unnest($4::text[]) AS t WHERE ` + guardMissingWhere

// ErrStaleDriver is returned when a fence row of the migration was written by a newer
// driver (a greater lock token) than the caller: the caller lost its lock and must stop.
var ErrStaleDriver = errors.New("a newer driver of this migration has taken over (this process lost its lock): stop")

// SetFence inserts the fence row for a migration, or updates it (idempotent), as the driver
// with the given lock token, and commits it, so that every statement that starts after it
// returns sees it. A row left by a newer driver is not touched: ErrStaleDriver. It fails
// with ErrGuardMissing, the fence row committed (the caller undoes the cutover, which
// drops it), when a table of tables lacks the guard.
func SetFence(ctx context.Context, db Querier, migration string, r catalog.KeyRange, tables []string, token int64) error {
	lo, hi := bounds(r)
	var written int64
	var missing []string
	// QueryExecModeExec: one round trip, no statement preparation, inside the window.
	err := db.QueryRow(ctx, setFenceSQL, pgx.QueryExecModeExec, migration, lo, hi, catalog.QuoteTables(tables), token).Scan(&written, &missing)
	if err != nil {
		return fmt.Errorf("cutover: set fence %s on %s: %w", migration, r, err)
	}
	if written == 0 {
		return fmt.Errorf("cutover: set fence %s on %s: %w", migration, r, ErrStaleDriver)
	}
	if len(missing) > 0 {
		return fmt.Errorf("cutover: set fence %s on %s: %w on %s (re-run the move: it installs the guard before each cutover)", migration, r, ErrGuardMissing, quoteList(missing))
	}
	return nil
}

// ClaimFence is SetFence on a shard that may not have the fence table yet (a migration
// rolled back before it got to install its guard), without the guard check: the rollback
// writes its token there before it deletes the copy.
func ClaimFence(ctx context.Context, db Querier, migration string, r catalog.KeyRange, token int64) error {
	if _, err := db.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("cutover: create reshard.fence: %w", err)
	}
	return SetFence(ctx, db, migration, r, nil, token)
}

// MarkTombstone keeps the fence after the flip, so a stale client's write fails loudly
// instead of landing on the old shard. It recreates the row if it is missing: whatever
// removed it, the old shard must never take writes for a range it gave away. (A range
// that later moves back lifts the tombstone in that move, which cannot start before this
// migration is done.)
func MarkTombstone(ctx context.Context, db Execer, migration string, r catalog.KeyRange, token int64) error {
	lo, hi := bounds(r)
	tag, err := db.Exec(ctx, `INSERT INTO reshard.fence (migration, lo, hi, tombstone, token) VALUES ($1, $2, $3, true, $4)
		ON CONFLICT (migration) DO UPDATE SET tombstone = true, token = greatest(reshard.fence.token, EXCLUDED.token)`,
		migration, lo, hi, token)
	if err != nil {
		return fmt.Errorf("cutover: mark fence %s as tombstone: %w", migration, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("cutover: mark fence %s as tombstone: no row written", migration)
	}
	return nil
}

// fenceRowsOf matches the fence rows of migration $1: its own, and the parts "<id>.<n>"
// (and "<id>.<n>.<m>") that OpenRange cut its tombstone into. Matched exactly: in a LIKE pattern an
// "_" of the id would be a wildcard and match other migrations' rows.
const fenceRowsOf = `(migration = $1 OR (starts_with(migration, $1 || '.') AND substr(migration, length($1) + 2) ~ '^[0-9]+(\.[0-9]+)*$'))`

// DropFence removes a migration's fence rows (undo, rollback, or `cleanup --drop-fence`)
// that drivers up to token wrote; a newer driver's rows stay.
func DropFence(ctx context.Context, db Execer, migration string, token int64) error {
	_, err := db.Exec(ctx, `DELETE FROM reshard.fence WHERE `+fenceRowsOf+` AND token <= $2`, migration, token)
	if pgerr.Is(err, pgerr.UndefinedTable) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cutover: drop fence %s: %w", migration, err)
	}
	return nil
}

// quoteList quotes table names for messages.
func quoteList(names []string) string {
	return strings.Join(catalog.QuoteTables(names), ", ")
}

// OpenRange makes a shard take writes for r once it owns r, right after the flip that gave
// it r: it removes the fence that migration set there when it started (which kept
// misrouted clients' writes out of the copy) and lifts the tombstones of earlier moves
// away for r's keys (a range that moves back to a shard it once left). A tombstone that
// also covers keys outside r keeps fencing those (it is cut into the parts outside r), as
// the shard still does not own them. One transaction; idempotent.
//
// It runs after the flip, never before: until the catalog says the shard owns r, a write
// the shard accepted for r could be lost with a rollback. Clients routed here by the flip
// meet RS001 for the moment until this commits, and retry.
func OpenRange(ctx context.Context, db Conn, migration string, r catalog.KeyRange) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("cutover: open %s on the new owner: %w", r, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	if migration != "" {
		_, err := tx.Exec(ctx, `DELETE FROM reshard.fence WHERE migration = $1 AND NOT tombstone`, migration)
		if isUndefinedTable(err) {
			return nil // no fence was ever set on this shard
		}
		if err != nil {
			return fmt.Errorf("cutover: lift the incoming fence of %s: %w", migration, err)
		}
	}
	if err := liftTombstones(ctx, tx, r); errors.Is(err, errNoFenceTable) {
		return nil
	} else if err != nil {
		return err
	}
	return tx.Commit(ctx)
}

var errNoFenceTable = errors.New("no reshard.fence table on this shard")

func isUndefinedTable(err error) bool { return pgerr.Is(err, pgerr.UndefinedTable) }

// ClearTombstones lifts the tombstones on a shard for the keys of r (OpenRange without a
// migration's own fence).
func ClearTombstones(ctx context.Context, db Conn, r catalog.KeyRange) error {
	return OpenRange(ctx, db, "", r)
}

type tomb struct {
	id     string
	lo, hi *int64
	token  int64
}

func liftTombstones(ctx context.Context, tx pgx.Tx, r catalog.KeyRange) error {
	rows, err := tx.Query(ctx, `SELECT migration, lo, hi, token FROM reshard.fence WHERE tombstone FOR UPDATE`)
	if isUndefinedTable(err) {
		return errNoFenceTable
	}
	if err != nil {
		return fmt.Errorf("cutover: read tombstones: %w", err)
	}
	var overlapping []tomb
	for rows.Next() {
		var tb tomb
		if err := rows.Scan(&tb.id, &tb.lo, &tb.hi, &tb.token); err != nil {
			rows.Close()
			return err
		}
		if fenceRange(tb.lo, tb.hi).Overlaps(r) {
			overlapping = append(overlapping, tb)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, tb := range overlapping {
		if err := cutTombstone(ctx, tx, tb, r); err != nil {
			return err
		}
	}
	return nil
}

// cutTombstone replaces tombstone tb by its parts outside r, named "<id>.<n>", with its token.
func cutTombstone(ctx context.Context, tx pgx.Tx, tb tomb, r catalog.KeyRange) error {
	fr := fenceRange(tb.lo, tb.hi)
	if _, err := tx.Exec(ctx, `DELETE FROM reshard.fence WHERE migration = $1`, tb.id); err != nil {
		return fmt.Errorf("cutover: lift tombstone %s: %w", tb.id, err)
	}
	var rest []catalog.KeyRange
	if fr.Lo < r.Lo {
		rest = append(rest, catalog.KeyRange{Lo: fr.Lo, Hi: r.Lo})
	}
	if !r.HiInf && (fr.HiInf || fr.Hi > r.Hi) {
		rest = append(rest, catalog.KeyRange{Lo: r.Hi, Hi: fr.Hi, HiInf: fr.HiInf})
	}
	for i, part := range rest {
		lo, hi := bounds(part)
		if _, err := tx.Exec(ctx, `INSERT INTO reshard.fence (migration, lo, hi, tombstone, token) VALUES ($1, $2, $3, true, $4)
			ON CONFLICT (migration) DO UPDATE SET lo = EXCLUDED.lo, hi = EXCLUDED.hi`, fmt.Sprintf("%s.%d", tb.id, i+1), lo, hi, tb.token); err != nil {
			return fmt.Errorf("cutover: keep tombstone %s outside %s: %w", tb.id, r, err)
		}
	}
	return nil
}

func fenceRange(lo, hi *int64) catalog.KeyRange {
	r := catalog.Full
	if lo != nil {
		r.Lo = *lo
	}
	if hi != nil {
		r.Hi, r.HiInf = *hi, false
	}
	return r
}

// ErrGuardMissing is returned by SetFence when a table of the shard lacks the guard
// trigger (or has it disabled, or enabled for origin sessions only): the fence would not
// stop writes there.
var ErrGuardMissing = errors.New("the fence guard trigger is missing or not enabled ALWAYS")

// ErrLockNotGranted is returned when the guard's DDL did not get its table lock within
// lock_timeout in any of its attempts.
var ErrLockNotGranted = errors.New("lock not granted within lock_timeout")
