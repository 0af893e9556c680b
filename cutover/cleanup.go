package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// DeleteOptions throttle the deletion of a moved range from its old shard.
type DeleteOptions struct {
	BatchRows int           // rows per DELETE; default 5000
	Pause     time.Duration // sleep between batches, to leave room for the live load
	Progress  func(table string, deleted int64)
	// Check, if set, is called before each batch; an error stops the deletion (the
	// migration's executor: the driver may have lost its migration lock).
	Check func() error
	// Tombstone, if set, is the migration whose tombstone must fence exactly the range on
	// this shard for a batch to run: each batch share-locks it first. Once the range (or a
	// part) belongs to the shard again, a move back lifts the tombstone, and a cleanup
	// still running (a driver paused past its lease, say) deletes nothing more.
	Tombstone string
}

// ErrNotTombstoned is returned by DeleteRange when the migration's tombstone does not
// fence the range on the shard any more: the shard may own the range again.
var ErrNotTombstoned = errors.New("the range is not tombstoned on this shard any more (it may belong to it again): nothing more is deleted")

// Conn is a connection that can run a transaction.
type Conn interface {
	Querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

// DeleteRange deletes r's rows of every table from db in small batches, children first
// (tables in reverse order), each batch its own short transaction through the fence
// bypass: the fence stays as a tombstone while its rows go. It is idempotent and returns
// the rows deleted per table.
func DeleteRange(ctx context.Context, db Conn, keys catalog.Keyspace, tables []string, r catalog.KeyRange, opts DeleteOptions) (map[string]int64, error) {
	if opts.BatchRows <= 0 {
		opts.BatchRows = 5000
	}
	out := map[string]int64{}
	for i := len(tables) - 1; i >= 0; i-- {
		t := tables[i]
		sql := batchDeleteSQL(catalog.QuoteTable(t), keys.Pred(t, "", r), opts.BatchRows)
		for {
			if opts.Check != nil {
				if err := opts.Check(); err != nil {
					return out, err
				}
			}
			n, err := deleteBatch(ctx, db, sql, opts.Tombstone, r)
			if err != nil {
				return out, fmt.Errorf("cutover: delete %s rows of %s: %w", r, t, err)
			}
			out[t] += n
			if opts.Progress != nil {
				opts.Progress(t, out[t])
			}
			if n < int64(opts.BatchRows) {
				break
			}
			if opts.Pause > 0 {
				select {
				case <-ctx.Done():
					return out, ctx.Err()
				case <-time.After(opts.Pause):
				}
			}
		}
	}
	return out, nil
}

// batchDeleteSQL deletes up to n rows matching pred from table qt. ctid batches avoid
// sorting and keep each batch a short transaction, but a ctid names a row only within one
// relation: in a partitioned table the same ctid exists in every partition, so a row is
// named by (tableoid, ctid), and the range predicate is repeated on the outer DELETE so
// that no batch can ever delete a row outside the range, whatever the plan.
func batchDeleteSQL(qt, pred string, n int) string {
	return fmt.Sprintf(`DELETE FROM %[1]s WHERE %[2]s AND (tableoid, ctid) IN
		(SELECT tableoid, ctid FROM %[1]s WHERE %[2]s LIMIT %[3]d)`, qt, pred, n)
}

// batchStartSQL opens a batch: the fence bypass for this transaction, and whether the
// migration's tombstone ($2; none: true) still fences exactly the range, share-locked so
// that no move back lifts it while the batch runs.
const batchStartSQL = `SELECT set_config($1, 'on', true), $2::text IS NULL OR EXISTS (
	SELECT 1 FROM reshard.fence WHERE migration = $2 AND tombstone
	  AND lo IS NOT DISTINCT FROM $3 AND hi IS NOT DISTINCT FROM $4 FOR SHARE)`

func deleteBatch(ctx context.Context, db Conn, sql, tombstone string, r catalog.KeyRange) (int64, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	var mig *string
	if tombstone != "" {
		mig = &tombstone
	}
	lo, hi := bounds(r)
	var bypass string
	var fenced bool
	if err := tx.QueryRow(ctx, batchStartSQL, BypassSetting, mig, lo, hi).Scan(&bypass, &fenced); err != nil {
		return 0, err
	}
	if !fenced {
		return 0, ErrNotTombstoned
	}
	tag, err := tx.Exec(ctx, sql)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), tx.Commit(ctx)
}
