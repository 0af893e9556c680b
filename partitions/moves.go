package partitions

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// Retention removes rows without row changes: a DETACH or DROP of a partition on the
// source of a move after the copy's snapshot, or on its target after the copy, makes the
// target's copy of the range silently differ from the source. So retention waits on the
// shards of every move that has not flipped yet (once flipped, the copy is final and the
// source's rows of the range are about to go). Creating partitions ahead goes on: it
// removes nothing.

// MovesOn says why retention must wait on a shard: each migration of ms that has not
// flipped nor ended and has the shard as its source or target. It is "" when none has.
func MovesOn(shard string, ms map[string]catalog.Migration) string {
	ids := make([]string, 0, len(ms))
	for id := range ms {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var why []string
	for _, id := range ids {
		m := ms[id]
		if m.Terminal() || m.Phase == catalog.PhaseFlipped || m.Phase == catalog.PhaseCleaningUp {
			continue
		}
		switch shard {
		case m.Source:
			why = append(why, fmt.Sprintf("migration %s is moving a range from it", id))
		case m.Target:
			why = append(why, fmt.Sprintf("migration %s is moving a range to it", id))
		}
	}
	return strings.Join(why, "; ")
}

// movesHere says why retention must wait on the shard conn is connected to, as the shard
// itself sees it: a move's publication exists on its source from before its slot's
// snapshot until the move ends there, and its reshard.progress row on its target from
// before the copy until the flip. It catches a move the caller's catalog read did not
// show: the mover writes both under this package's maintenance lock, so a move that starts
// during an apply either waits for it or is seen here.
func movesHere(ctx context.Context, conn *pgx.Conn) (string, error) {
	var (
		pubs, targets []string
		hasProgress   bool
	)
	err := conn.QueryRow(ctx, `SELECT (SELECT coalesce(array_agg(pubname::text ORDER BY pubname), '{}') FROM pg_publication WHERE pubname LIKE 'reshard\_%'),
		to_regclass('reshard.progress') IS NOT NULL`).Scan(&pubs, &hasProgress)
	if err != nil {
		return "", fmt.Errorf("look for moves using the shard: %w", err)
	}
	if hasProgress {
		rows, err := conn.Query(ctx, `SELECT migration FROM reshard.progress ORDER BY 1`)
		if err != nil {
			return "", fmt.Errorf("look for moves to the shard: %w", err)
		}
		if targets, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return "", fmt.Errorf("look for moves to the shard: %w", err)
		}
	}
	var why []string
	if len(pubs) > 0 {
		why = append(why, fmt.Sprintf("a move from this shard is under way (publication %s)", strings.Join(pubs, ", ")))
	}
	if len(targets) > 0 {
		why = append(why, fmt.Sprintf("a move to this shard is under way (migration %s in reshard.progress)", strings.Join(targets, ", ")))
	}
	return strings.Join(why, "; "), nil
}

// holdReason joins the catalog's reasons and the shard's own.
func (a *applier) holdReason(ctx context.Context) error {
	pubs, err := movesHere(ctx, a.conn)
	if err != nil {
		return err
	}
	if pubs != "" {
		if a.hold != "" {
			a.hold += "; "
		}
		a.hold += pubs
	}
	return nil
}

// holdRemoves reports the partitions retention would remove as kept, when a move holds
// retention on the shard; it returns false (nothing held) otherwise.
func (a *applier) holdRemoves(tr *TableReport, ti *tableInfo, rs []removeOp) bool {
	if a.hold == "" {
		return false
	}
	if len(rs) == 0 {
		return true
	}
	tr.RetentionHeld = a.hold
	for _, r := range rs {
		tr.Skipped = append(tr.Skipped, Change{Partition: r.c.name, From: ti.clock.show(r.c.from), To: ti.clock.show(r.c.to),
			Reason: "past retention, kept while a move uses this shard: " + a.hold})
	}
	return true
}
