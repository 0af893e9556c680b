package partitions

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
)

// ErrBusy is returned by Apply when another apply holds this shard's maintenance lock.
var ErrBusy = errors.New("another reshard partitions apply (or reshard schedule) is maintaining this shard right now: run again when it ends")

// Options tune Apply. The zero value gives the defaults.
type Options struct {
	// LockTimeout bounds each DDL statement's wait for its lock (and so how long it can
	// make other sessions queue behind it). Default 2s.
	LockTimeout time.Duration
	// Attempts per statement when the lock is not granted in time. Default 5.
	Attempts int
	// Backoff is the first pause between attempts; it doubles (with jitter) up to
	// MaxBackoff. Defaults 500ms and 10s.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// HoldRetention, when set, says why retention must not remove partitions on this
	// shard now (moves use it: see MovesOn); partitions are still created.
	HoldRetention string
}

func (o Options) withDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	return o
}

// Plan reports, for one shard, what Apply would do at instant now. It changes nothing and
// takes no lock stronger than a catalog read (plus a read of the DEFAULT partition to find
// the rows that would block a creation).
// opts (at most one) may hold retention as Apply's would.
func Plan(ctx context.Context, conn *pgx.Conn, specs []catalog.PartitionSpec, now time.Time, opts ...Options) (*Report, error) {
	ss, err := normalize(specs)
	if err != nil {
		return nil, err
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	a := &applier{conn: conn, opts: o.withDefaults(), now: now, hold: o.HoldRetention}
	if err := a.holdReason(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Now: now, DryRun: true}
	for _, s := range ss {
		rep.Tables = append(rep.Tables, a.planOne(ctx, s))
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Apply brings one shard's partitions in line with specs at instant now: creates what is
// missing from the current period through premake periods ahead, fixes owner, replica
// identity and grants of those partitions to match the parent, then detaches or drops
// partitions past retention. Problems with one table are reported in its TableReport and
// do not stop the others. The error is for bad specs (nothing done), a busy shard
// (ErrBusy) or a cancelled context.
//
// conn must be one session (not shared meanwhile): Apply holds a session advisory lock
// and sets lock_timeout around DETACH ... CONCURRENTLY, which cannot run in a transaction.
func Apply(ctx context.Context, conn *pgx.Conn, specs []catalog.PartitionSpec, now time.Time, opts Options) (*Report, error) {
	ss, err := normalize(specs)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext('reshard.partitions'))").Scan(&got); err != nil {
		return nil, fmt.Errorf("take the maintenance lock on the shard: %w", err)
	}
	if !got {
		return nil, ErrBusy
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext('reshard.partitions'))")
	}()
	a := &applier{conn: conn, opts: opts.withDefaults(), now: now, hold: opts.HoldRetention}
	// Read under the maintenance lock: a move that starts later waits for it (mover).
	if err := a.holdReason(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Now: now}
	for _, s := range ss {
		rep.Tables = append(rep.Tables, a.applyOne(ctx, s))
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

type applier struct {
	conn *pgx.Conn
	opts Options
	now  time.Time
	hold string // why retention waits on this shard, if it does
}

func (a *applier) change(ck clock, name string, from, to time.Time, reason string) Change {
	return Change{Partition: name, From: ck.literal(from), To: ck.literal(to), Reason: reason}
}

func (a *applier) discover(ctx context.Context, s spec) (*tableInfo, error) {
	return discover(ctx, a.conn, s, a.now, a.opts.LockTimeout)
}

// discoverAndPlan reads the table and plans it; when the table cannot be read, the report
// says why and ok is false.
func (a *applier) discoverAndPlan(ctx context.Context, s spec) (tr TableReport, ti *tableInfo, p tablePlan, ok bool) {
	tr = TableReport{Table: s.Table, Interval: s.Interval}
	ti, err := a.discover(ctx, s)
	if err != nil {
		tr.Errors = append(tr.Errors, err.Error())
		return tr, nil, p, false
	}
	return tr, ti, planTable(s, ti, a.now), true
}

func (a *applier) planOne(ctx context.Context, s spec) TableReport {
	tr, ti, p, ok := a.discoverAndPlan(ctx, s)
	if !ok {
		return tr
	}
	ck := ti.clock
	for _, c := range p.creates {
		if msg, err := a.defaultTrap(ctx, ti, c); err != nil {
			tr.Errors = append(tr.Errors, err.Error())
			continue
		} else if msg != "" {
			tr.Errors = append(tr.Errors, msg)
			continue
		}
		tr.Created = append(tr.Created, a.change(ck, c.name, c.from, c.to, c.reason))
	}
	if len(tr.Created) != len(p.creates) {
		// Whether an old partition is the last one depends on what can really be created.
		p.removes, p.kept = planRetention(s, ti, a.now, len(tr.Created))
	}
	for _, f := range p.fixes {
		tr.Fixed = append(tr.Fixed, Change{Partition: f.c.name, From: ck.show(f.c.from), To: ck.show(f.c.to), Reason: f.reason(ti)})
	}
	tr.Skipped = append(p.skipped, p.kept...)
	if !a.holdRemoves(&tr, ti, p.removes) {
		a.reportRemoves(&tr, s, ti, p.removes, nil)
	}
	tr.Errors = append(tr.Errors, p.errors...)
	tr.Partitions = len(ti.attached())
	tr.Runway, tr.RunwayUntil = runway(s, ti, a.now)
	return tr
}

func (a *applier) reportRemoves(tr *TableReport, s spec, ti *tableInfo, rs []removeOp, attempts []int) {
	for i, r := range rs {
		c := Change{Partition: r.c.name, From: ti.clock.show(r.c.from), To: ti.clock.show(r.c.to), Reason: r.reason}
		if attempts != nil {
			c.Attempts = attempts[i]
		}
		if s.drop {
			tr.Dropped = append(tr.Dropped, c)
		} else {
			tr.Detached = append(tr.Detached, c)
		}
	}
}

func (a *applier) applyOne(ctx context.Context, s spec) TableReport {
	tr, ti, p, ok := a.discoverAndPlan(ctx, s)
	if !ok {
		return tr
	}
	tr.Skipped = p.skipped
	tr.Errors = append(tr.Errors, p.errors...)
	for _, c := range p.creates {
		a.applyCreate(ctx, &tr, ti, c)
	}
	for _, f := range p.fixes {
		a.applyFix(ctx, &tr, ti, f)
	}

	// Retention is decided on a fresh read, after the creations: whether a partition is
	// the last one depends on what really got created.
	if s.retN > 0 {
		if !a.applyRetention(ctx, &tr, s) {
			return tr
		}
	} else {
		tr.Skipped = append(tr.Skipped, p.kept...)
	}

	ti, err := a.discover(ctx, s)
	if err != nil {
		tr.Errors = append(tr.Errors, err.Error())
		return tr
	}
	tr.Partitions = len(ti.attached())
	tr.Runway, tr.RunwayUntil = runway(s, ti, a.now)
	return tr
}

// applyCreate creates one partition unless the default partition holds rows of its period
// (the trap), and reports which.
func (a *applier) applyCreate(ctx context.Context, tr *TableReport, ti *tableInfo, c createOp) {
	ck := ti.clock
	var trap string
	n, err := a.retry(ctx, func() error {
		var err error
		trap, err = a.defaultTrap(ctx, ti, c)
		return err
	})
	if err != nil {
		err = fmt.Errorf("look for its rows in the default partition first: %w", err)
	}
	if err == nil && trap == "" {
		n, err = a.retry(ctx, func() error { return a.create(ctx, ti, c) })
		if pgerr.Is(err, pgerr.CheckViolation) { // rows reached the default partition since the check
			if t, terr := a.defaultTrap(ctx, ti, c); terr == nil && t != "" {
				trap, err = t, nil
			}
		}
	}
	switch {
	case trap != "":
		tr.Errors = append(tr.Errors, trap)
	case err != nil:
		tr.Errors = append(tr.Errors, fmt.Sprintf("create %s FROM (%s) TO (%s): %v", c.name, ck.literal(c.from), ck.literal(c.to), err))
	default:
		ch := a.change(ck, c.name, c.from, c.to, c.reason)
		ch.Attempts = n
		tr.Created = append(tr.Created, ch)
	}
}

// applyFix brings one partition's replica identity, owner or grants in line with the parent.
func (a *applier) applyFix(ctx context.Context, tr *TableReport, ti *tableInfo, f fixOp) {
	n, err := a.retry(ctx, func() error {
		return a.inTx(ctx, func(tx pgx.Tx) error { return a.fix(ctx, tx, ti, f, qualifiedIdent(f.c.schema, f.c.name)) })
	})
	if err != nil {
		tr.Errors = append(tr.Errors, fmt.Sprintf("%s: %s: %v", f.c.name, f.reason(ti), err))
		return
	}
	tr.Fixed = append(tr.Fixed, Change{Partition: f.c.name, From: ti.clock.show(f.c.from), To: ti.clock.show(f.c.to), Reason: f.reason(ti), Attempts: n})
}

// applyRetention reads the table again and detaches or drops what retention removes
// (unless a move holds it); it returns false when the table could not be read.
func (a *applier) applyRetention(ctx context.Context, tr *TableReport, s spec) bool {
	ti, err := a.discover(ctx, s)
	if err != nil {
		tr.Errors = append(tr.Errors, err.Error())
		return false
	}
	removes, kept := planRetention(s, ti, a.now, 0) // what was created is in ti now
	tr.Skipped = append(tr.Skipped, kept...)
	if a.holdRemoves(tr, ti, removes) {
		removes = nil
	}
	var done []removeOp
	var attempts []int
	for _, r := range removes {
		n, err := a.remove(ctx, s, ti, r)
		if err != nil {
			verb := "detach"
			if s.drop {
				verb = "drop"
			}
			tr.Errors = append(tr.Errors, fmt.Sprintf("%s %s: %v", verb, r.c.name, err))
			continue
		}
		done, attempts = append(done, r), append(attempts, n)
	}
	a.reportRemoves(tr, s, ti, done, attempts)
	return true
}

// inTx runs fn in a transaction whose lock waits are bounded by LockTimeout.
func (a *applier) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", a.opts.LockTimeout.Milliseconds())); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// session runs one statement outside a transaction (DETACH ... CONCURRENTLY cannot run in
// one) with the session's lock_timeout set for it and restored after.
func (a *applier) session(ctx context.Context, sql string) error {
	var old string
	if err := a.conn.QueryRow(ctx, "SELECT current_setting('lock_timeout')").Scan(&old); err != nil {
		return err
	}
	if _, err := a.conn.Exec(ctx, "SELECT set_config('lock_timeout', $1, false)", fmt.Sprintf("%dms", a.opts.LockTimeout.Milliseconds())); err != nil {
		return err
	}
	defer func() {
		_, _ = a.conn.Exec(context.WithoutCancel(ctx), "SELECT set_config('lock_timeout', $1, false)", old)
	}()
	_, err := a.conn.Exec(ctx, sql)
	return err
}

// retry runs fn until it succeeds, fails for a reason other than a lock wait, or runs out
// of attempts. It returns how many attempts it made.
func (a *applier) retry(ctx context.Context, fn func() error) (int, error) {
	wait := a.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return attempt, nil
		}
		// lock_timeout expired, or a deadlock.
		if !pgerr.Is(err, pgerr.LockNotAvailable, pgerr.DeadlockDetected) {
			return attempt, err
		}
		if attempt >= a.opts.Attempts {
			return attempt, fmt.Errorf("lock not granted within lock_timeout %s in %d attempts: a long transaction holds a conflicting lock (see pg_stat_activity and pg_locks); this step changed nothing and the next run tries again: %w",
				a.opts.LockTimeout, attempt, err)
		}
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-ctx.Done():
			return attempt, ctx.Err()
		case <-time.After(d):
		}
		wait = min(2*wait, a.opts.MaxBackoff)
	}
}

// defaultTrap returns a message when the DEFAULT partition holds rows of the partition to
// be created: PostgreSQL would refuse the creation (after scanning the default under an
// ACCESS EXCLUSIVE lock), so reshard refuses first and says how to move them.
func (a *applier) defaultTrap(ctx context.Context, ti *tableInfo, c createOp) (string, error) {
	if ti.def == nil {
		return "", nil
	}
	ck := ti.clock
	col := pgx.Identifier{ti.column}.Sanitize()
	var (
		n      int64
		lo, hi *time.Time
	)
	err := a.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, fmt.Sprintf("SELECT count(*), min(%s), max(%s) FROM %s WHERE %s >= %s AND %s < %s",
			col, col, qualifiedIdent(ti.def.schema, ti.def.name), col, ck.sqlLiteral(c.from), col, ck.sqlLiteral(c.to))).Scan(&n, &lo, &hi)
	})
	if err != nil {
		return "", fmt.Errorf("look for rows of %s in the default partition %s: %w", c.name, ti.def.name, err)
	}
	if n == 0 {
		return "", nil
	}
	show := func(t *time.Time) string {
		if t == nil {
			return "?"
		}
		if ck.kind != kindTimestamptz {
			return ck.literal(time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC))
		}
		return ck.literal(*t)
	}
	parent, def, part := qualified(ti.schema, ti.name), qualified(ti.def.schema, ti.def.name), qualified(ti.schema, c.name)
	where := fmt.Sprintf("%s >= %s AND %s < %s", quoteIdent(ti.column), ck.sqlLiteral(c.from), quoteIdent(ti.column), ck.sqlLiteral(c.to))
	return fmt.Sprintf("not creating %s FROM (%s) TO (%s): the default partition %s already holds %d row(s) of that range, from %s to %s; "+
		"PostgreSQL refuses to create a partition while its rows sit in the default partition (the pg_partman trap). "+
		"Move them into the new partition in one transaction, then run apply again (it also sets the partition's owner, replica identity and grants): "+
		"BEGIN; SET LOCAL lock_timeout = '5s'; CREATE TEMP TABLE reshard_moved ON COMMIT DROP AS SELECT * FROM %s WHERE %s; DELETE FROM %s WHERE %s; "+
		"CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s'); INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM reshard_moved; COMMIT;",
		c.name, ck.literal(c.from), ck.literal(c.to), def, n, show(lo), show(hi),
		parent, where, def, where, part, parent, ck.literal(c.from), ck.literal(c.to), parent), nil
}

// create makes one partition with CREATE TABLE ... PARTITION OF, which clones the parent's
// indexes, constraints, defaults and row triggers, and in the same transaction gives it the
// parent's owner, replica identity and grants, which PostgreSQL does not copy.
func (a *applier) create(ctx context.Context, ti *tableInfo, c createOp) error {
	ck := ti.clock
	name := qualifiedIdent(ti.schema, c.name)
	return a.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)",
			name, qualifiedIdent(ti.schema, ti.name), ck.sqlLiteral(c.from), ck.sqlLiteral(c.to))); err != nil {
			return err
		}
		var me string
		if err := tx.QueryRow(ctx, "SELECT current_user::text").Scan(&me); err != nil {
			return err
		}
		f := fixOp{c: child{schema: ti.schema, name: c.name, owner: me},
			owner: me != ti.owner, replIdent: ti.replIdent != "d", grants: ti.grants}
		return a.fix(ctx, tx, ti, f, name)
	})
}

// fix gives a partition the parent's owner, replica identity and grants.
func (a *applier) fix(ctx context.Context, tx pgx.Tx, ti *tableInfo, f fixOp, name string) error {
	if f.owner {
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s OWNER TO %s", name, pgx.Identifier{ti.owner}.Sanitize())); err != nil {
			return fmt.Errorf("give %s the parent's owner %s (run as a superuser or a member of %s): %w", f.c.name, ti.owner, ti.owner, err)
		}
	}
	if f.replIdent {
		ri := ""
		switch ti.replIdent {
		case "n":
			ri = "NOTHING"
		case "f":
			ri = "FULL"
		case "d":
			ri = "DEFAULT"
		case "i":
			// The partition's own index attached to the parent's replica-identity index.
			var idx string
			err := tx.QueryRow(ctx, `SELECT ic.relname::text FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid
JOIN pg_class ic ON ic.oid = x.indexrelid WHERE i.inhparent = $1 AND x.indrelid = to_regclass($2)`, ti.riIndex, name).Scan(&idx)
			if err != nil {
				return fmt.Errorf("find %s's index that is a partition of the parent's replica-identity index %s (create it, or ALTER INDEX %s ATTACH PARTITION ...): %w",
					f.c.name, ti.riIndexName, ti.riIndexName, err)
			}
			ri = "USING INDEX " + pgx.Identifier{idx}.Sanitize()
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY %s", name, ri)); err != nil {
			return fmt.Errorf("set %s's replica identity to the parent's (%s): %w", f.c.name, ri, err)
		}
	}
	// One GRANT per grantee and grant option, privileges in a stable order.
	type key struct {
		grantee   string
		grantable bool
	}
	privs := map[key][]string{}
	var keys []key
	for _, g := range f.grants {
		k := key{g.Grantee, g.Grantable}
		if _, ok := privs[k]; !ok {
			keys = append(keys, k)
		}
		privs[k] = append(privs[k], g.Privilege)
	}
	for _, k := range keys {
		who := "PUBLIC"
		if k.grantee != "PUBLIC" {
			who = pgx.Identifier{k.grantee}.Sanitize()
		}
		ps := privs[k]
		sort.Strings(ps)
		sql := fmt.Sprintf("GRANT %s ON TABLE %s TO %s", strings.Join(ps, ", "), name, who)
		if k.grantable {
			sql += " WITH GRANT OPTION"
		}
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("copy the parent's grants to %s (%s): %w", f.c.name, sql, err)
		}
	}
	return nil
}

// remove detaches (or detaches and drops) one partition past retention. A plain detach is
// done CONCURRENTLY when the table has no DEFAULT partition and no other detach is pending
// (PostgreSQL forbids it otherwise), so readers and writers of the parent are not blocked;
// an interrupted one is finished with FINALIZE. A drop detaches and drops in one transaction, so a failure never
// leaves an orphan table behind.
func (a *applier) remove(ctx context.Context, s spec, ti *tableInfo, r removeOp) (int, error) {
	parent, part := qualifiedIdent(ti.schema, ti.name), qualifiedIdent(r.c.schema, r.c.name)
	// pending: this partition's detach is pending; other: another partition's is, which
	// forbids a CONCURRENTLY detach of this one until it is finished.
	pending := func() (p, other bool, err error) {
		err = a.conn.QueryRow(ctx, `SELECT coalesce(bool_or(inhdetachpending) FILTER (WHERE inhrelid = $1), false),
       coalesce(bool_or(inhdetachpending) FILTER (WHERE inhrelid <> $1), false)
FROM pg_inherits WHERE inhparent = $2`, r.c.oid, ti.oid).Scan(&p, &other)
		return p, other, err
	}
	finalize := func() error {
		p, _, err := pending()
		if err != nil || !p {
			return err
		}
		return a.session(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s FINALIZE", parent, part))
	}
	if s.drop {
		return a.retry(ctx, func() error {
			if err := finalize(); err != nil {
				return err
			}
			return a.inTx(ctx, func(tx pgx.Tx) error {
				var attached bool
				if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = $1 AND inhparent = $2)", r.c.oid, ti.oid).Scan(&attached); err != nil {
					return err
				}
				if attached {
					if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s", parent, part)); err != nil {
						return err
					}
				}
				_, err := tx.Exec(ctx, "DROP TABLE "+part)
				return err
			})
		})
	}
	return a.retry(ctx, func() error {
		p, other, err := pending()
		if err != nil {
			return err
		}
		switch {
		case p:
			return a.session(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s FINALIZE", parent, part))
		case ti.def == nil && !other:
			return a.session(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY", parent, part))
		}
		return a.inTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s", parent, part))
			return err
		})
	})
}

func qualifiedIdent(schema, name string) string { return pgx.Identifier{schema, name}.Sanitize() }
