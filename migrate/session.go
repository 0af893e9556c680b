package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/mover"
)

// session is one migration opened for work by this driver: its lock held, its journal
// read, and (unless the migration has ended) control connections to its two shards.
type session struct {
	// ctx ends when the caller's does, or as soon as the lock may have been lost.
	ctx            context.Context
	cancel         context.CancelFunc
	lock           *catalog.Lock
	m              *catalog.Migration
	env            cutover.Env
	srcDSN, dstDSN string
	// mv is the migration's mover once this driver has built one (nil until then).
	mv Mover
}

// useMover makes mv the session's mover: the cutover's (env.Mover), and the one that
// removes the replication and the copy.
func (s *session) useMover(mv Mover) { s.mv, s.env.Mover = mv, mv }

func (s *session) migration() *catalog.Migration {
	if s == nil {
		return nil
	}
	return s.m
}

// close closes the connections (the current ones: reconnect may have replaced them) and
// releases the lock.
func (s *session) close() {
	ctx := context.WithoutCancel(s.ctx)
	for _, c := range []cutover.Conn{s.env.Source, s.env.Target} {
		if pc, ok := c.(*pgx.Conn); ok {
			pc.Close(ctx)
		}
	}
	s.env.Source, s.env.Target = nil, nil
	s.cancel()
	if s.lock != nil {
		_ = s.lock.Unlock(ctx)
		s.lock = nil
	}
}

// guarded is the catalog as one driver writes it: every write compares the driver's lock.
// The observer is told of each write that succeeded.
type guarded struct {
	Catalog
	held catalog.WriteOption
	obs  Observer
}

func (g guarded) PutMigration(ctx context.Context, m *catalog.Migration, opts ...catalog.WriteOption) error {
	return observed(g.obs, m, g.Catalog.PutMigration(ctx, m, append(opts, g.held)...))
}

func (g guarded) Freeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error {
	return observed(g.obs, m, g.Catalog.Freeze(ctx, st, lo, m, append(opts, g.held)...))
}

func (g guarded) Unfreeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error {
	return observed(g.obs, m, g.Catalog.Unfreeze(ctx, st, lo, m, append(opts, g.held)...))
}

func (g guarded) Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, newShard string, opts ...catalog.WriteOption) error {
	return observed(g.obs, m, g.Catalog.Flip(ctx, st, lo, m, newShard, append(opts, g.held)...))
}

// open takes migration id's lock, reads its journal (creating it with create, when given
// and there is none) and, unless it was rolled back or cancelled, connects to its shards.
// On error everything is released; otherwise the caller closes the session.
func (e *Executor) open(ctx context.Context, id string, create func(context.Context, Catalog) (*catalog.Migration, error)) (*session, error) {
	if e.Lock == nil {
		return nil, errors.New("executor: no Lock: a migration is driven only under its lease lock")
	}
	lock, err := e.Lock(ctx, id)
	if err != nil {
		return nil, err
	}
	ss := &session{lock: lock}
	ss.ctx, ss.cancel = lock.Context(ctx)
	cat := guarded{Catalog: e.Catalog, held: catalog.HeldBy(lock), obs: e.observer()}
	// Every line logged about the migration carries its id.
	ss.env = cutover.Env{Catalog: cat, Lease: lock, Log: e.log().With("migration", id)}
	ss.m, err = cat.GetMigration(ss.ctx, id)
	if errors.Is(err, catalog.ErrNotFound) && create != nil {
		ss.m, err = create(ss.ctx, cat)
	}
	if err != nil {
		ss.close()
		return ss, err
	}
	cat.obs.Migration(ss.m)
	if ss.m.Terminal() && ss.m.Phase != catalog.PhaseDone {
		return ss, nil // nothing left to connect for
	}
	st, err := e.Catalog.Load(ss.ctx)
	if err != nil {
		ss.close()
		return ss, err
	}
	ss.env.Keys, ss.env.Tables = st.Config.Keyspace(), st.Config.Tables
	var src, dst *pgx.Conn
	if src, dst, ss.srcDSN, ss.dstDSN, err = e.connect(ss.ctx, st, ss.m); err != nil {
		ss.close()
		return ss, err
	}
	ss.env.Source, ss.env.Target = src, dst
	if !ss.m.Terminal() {
		e.evict(ss)
	}
	return ss, nil
}

func (e *Executor) connect(ctx context.Context, st *catalog.State, m *catalog.Migration) (src, dst *pgx.Conn, srcDSN, dstDSN string, err error) {
	ss, ok := st.Shards[m.Source]
	if !ok {
		return nil, nil, "", "", fmt.Errorf("migration %s: source shard %q is not in the catalog", m.ID, m.Source)
	}
	ts, ok := st.Shards[m.Target]
	if !ok {
		return nil, nil, "", "", fmt.Errorf("migration %s: target shard %q is not in the catalog", m.ID, m.Target)
	}
	if srcDSN, err = e.DSN(ss); err != nil {
		return nil, nil, "", "", err
	}
	if dstDSN, err = e.DSN(ts); err != nil {
		return nil, nil, "", "", err
	}
	if src, err = connectAs(ctx, srcDSN, m.ID); err != nil {
		return nil, nil, "", "", fmt.Errorf("connect to source %s (%s): %w", ss.Name, catalog.MaskDSN(srcDSN), err)
	}
	if dst, err = connectAs(ctx, dstDSN, m.ID); err != nil {
		src.Close(ctx)
		return nil, nil, "", "", fmt.Errorf("connect to target %s (%s): %w", ts.Name, catalog.MaskDSN(dstDSN), err)
	}
	return src, dst, srcDSN, dstDSN, nil
}

// evictSQL ends every other session of the migration on a shard (by the prefix of its
// application_name), and says how many it ended.
const evictSQL = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE left(application_name, length($1)) = $1 AND pid <> pg_backend_pid()`

// evict ends the sessions that another driver of the migration left on both shards: the
// driver that held the lock before this one (and lost it: it died, or is paused past its
// lease) may still hold the slot active, a snapshot open, or locks on the target's tables
// and fence row, which would block this driver forever; and it must not write anything
// more. This driver holds the lock, so every such session is stale.
func (e *Executor) evict(ss *session) {
	for _, side := range []struct {
		name string
		db   cutover.Querier
	}{{"source", ss.env.Source}, {"target", ss.env.Target}} {
		var n int
		if err := side.db.QueryRow(ss.ctx, evictSQL, mover.SessionPrefix(ss.m.ID)).Scan(&n); err != nil {
			// Not fatal (the role may lack pg_signal_backend): what the earlier driver
			// still does fails on the tokens; only a wait on its locks may follow.
			ss.env.Log.Warn("could not end the sessions of an earlier driver of the migration", "shard", side.name, "err", err)
			continue
		}
		if n > 0 {
			ss.env.Log.Warn("ended sessions an earlier driver of the migration left", "shard", side.name, "sessions", n)
		}
	}
}

// connectAs opens a control connection of migration id's driver, named like the mover's
// sessions so that a driver taking over ends it too (see evict).
func connectAs(ctx context.Context, dsn, id string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = mover.SessionPrefix(id) + "driver"
	return pgx.ConnectConfig(ctx, cfg)
}
