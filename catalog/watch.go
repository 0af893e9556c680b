package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache is a live copy of a cluster's State: it loads the state, then applies etcd watch
// events to it. Each etcd watch response carries whole revisions (a transaction's events
// are never split), and the cache publishes a new immutable snapshot only after a whole
// response is applied, so a reader never sees half of a flip or a split. After a
// compaction or a broken watch it starts again from a fresh Load.
//
// A snapshot shares all it can with the one before: the ranges live in a chunked index
// (rangeIndex) where a flip copies one chunk, so following a flip costs the same at a
// million ranges as at ten, and the resolver answers from the index. The flat State
// (Ranges, ModRev) is built from a snapshot only when someone asks for it (State,
// WaitRevision), once per snapshot.
type Cache struct {
	s         *Store
	cur       atomic.Pointer[snapshot]
	cancel    context.CancelFunc
	done      chan struct{}
	mu        sync.Mutex
	lastErr   error
	reloads   atomic.Int64
	onPublish func(*State) // tests: sees every published state, in order
}

type snapshot struct {
	rev     int64
	idx     *rangeIndex
	cfg     Config
	shards  map[string]Shard
	migs    map[string]Migration
	revs    map[string]int64 // mod revisions of the config and the shards (journals carry theirs)
	changed chan struct{}    // closed when a newer snapshot is published

	once sync.Once
	st   *State    // the flat State, built once on demand
	same *snapshot // a snapshot with the same content at an older revision (progress)
}

// snapshotOf indexes a loaded State; the State itself is the snapshot's flat form.
func snapshotOf(st *State) *snapshot {
	revs := make(map[string]int64, len(st.Shards)+len(st.Migrations)+1)
	for k, v := range st.ModRev {
		if !strings.HasPrefix(k, pfxRanges) && !strings.HasPrefix(k, pfxMigrations) {
			revs[k] = v
		}
	}
	snap := &snapshot{rev: st.Revision, idx: newRangeIndex(st.Ranges, st.ModRev), cfg: st.Config,
		shards: st.Shards, migs: st.Migrations, revs: revs, changed: make(chan struct{}), st: st}
	snap.once.Do(func() {})
	return snap
}

// state is the snapshot as a State, built on first use and shared by every caller.
func (s *snapshot) state() *State {
	s.once.Do(func() {
		if s.same != nil {
			st := *s.same.state()
			st.Revision = s.rev
			s.st = &st // same is left as is: at reads it from the watcher
			return
		}
		st := &State{Revision: s.rev, Config: s.cfg, Shards: s.shards, Migrations: s.migs,
			ModRev: make(map[string]int64, len(s.revs)+s.idx.n)}
		for k, v := range s.revs {
			st.ModRev[k] = v
		}
		for id, m := range s.migs {
			st.ModRev[MigrationKey(id)] = m.ModRev
		}
		st.Ranges = s.idx.ranges(func(lo, rev int64) { st.ModRev[RangeKey(lo)] = rev })
		s.st = st
	})
	return s.st
}

// Watch loads the state and keeps it up to date until ctx ends or Close is called.
// Its first sync reads the catalog in pages at one revision, as Load does, straight into
// the cache's index: no flat State of every range is built on the way.
func (s *Store) Watch(ctx context.Context) (*Cache, error) {
	snap, err := s.sync(ctx)
	if err != nil {
		return nil, err
	}
	return s.watchSnap(ctx, snap, nil), nil
}

// sync loads a snapshot: config, shards and migrations as Load reads them, the ranges
// into an index.
func (s *Store) sync(ctx context.Context) (*snapshot, error) {
	var b indexBuilder
	st, err := s.load(ctx, &b)
	if err != nil {
		return nil, err
	}
	// load leaves the range keys out of ModRev: they are in the index; the journals carry
	// their own.
	for id := range st.Migrations {
		delete(st.ModRev, MigrationKey(id))
	}
	return &snapshot{rev: st.Revision, idx: b.done(), cfg: st.Config, shards: st.Shards,
		migs: st.Migrations, revs: st.ModRev, changed: make(chan struct{})}, nil
}

// NewStaticCache returns a Cache that holds st and never changes: for routing from a state
// read once (a Load, an imported export, a state built by hand in a test or an example)
// without etcd. Close ends a WaitServing or WaitRevision still waiting, as a stopped watch
// does.
func NewStaticCache(st *State) *Cache {
	done := make(chan struct{})
	var once sync.Once
	c := &Cache{cancel: func() { once.Do(func() { close(done) }) }, done: done}
	c.cur.Store(snapshotOf(st))
	return c
}

// watchFrom follows etcd from a State already read (tests start from one built by hand).
func (s *Store) watchFrom(ctx context.Context, st *State, onPublish func(*State)) *Cache {
	return s.watchSnap(ctx, snapshotOf(st), onPublish)
}

func (s *Store) watchSnap(ctx context.Context, snap *snapshot, onPublish func(*State)) *Cache {
	ctx, cancel := context.WithCancel(ctx)
	c := &Cache{s: s, cancel: cancel, done: make(chan struct{}), onPublish: onPublish}
	c.cur.Store(snap)
	go c.run(ctx)
	return c
}

// State is the current snapshot. It is shared: read it, do not modify it (Clone it to pass
// to a write). At a million ranges, the first call after a change builds it (a few hundred
// milliseconds); a router resolves keys with a Resolver, which needs no State.
func (c *Cache) State() *State { return c.cur.Load().state() }

// Changed returns a channel closed when a state newer than the current one is published.
func (c *Cache) Changed() <-chan struct{} { return c.cur.Load().changed }

// Err is the last error the watcher met (it keeps retrying); nil when healthy.
func (c *Cache) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Close stops the watcher and waits for it.
func (c *Cache) Close() {
	c.cancel()
	<-c.done
}

// WaitRevision waits until the cache has caught up with etcd revision rev (e.g. the
// revision a write returned) and returns that state.
func (c *Cache) WaitRevision(ctx context.Context, rev int64) (*State, error) {
	for {
		snap := c.cur.Load()
		if snap.rev >= rev {
			return snap.state(), nil
		}
		select {
		case <-snap.changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("catalog watch still at revision %d, waiting for %d: %w", snap.rev, rev, ctx.Err())
		case <-c.done:
			return nil, errors.New("catalog watch stopped")
		}
	}
}

func (c *Cache) publish(next *snapshot) {
	if c.onPublish != nil {
		c.onPublish(next.state())
	}
	old := c.cur.Swap(next)
	close(old.changed)
}

func (c *Cache) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func (c *Cache) run(ctx context.Context) {
	defer close(c.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.follow(ctx, c.cur.Load().rev+1)
		if ctx.Err() != nil {
			return
		}
		c.setErr(err)
		// Start again from a fresh read: a compacted revision cannot be replayed.
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			fresh, lerr := c.s.sync(ctx)
			if lerr != nil {
				c.setErr(lerr)
				continue
			}
			c.reloads.Add(1)
			c.setErr(nil)
			backoff = 100 * time.Millisecond
			c.publish(fresh)
			break
		}
	}
}

// follow applies watch responses from rev on, until the watch fails.
func (c *Cache) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.s.cli.Watch(wctx, c.s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithProgressNotify())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("catalog watch from revision %d: %w", rev, err)
		}
		if resp.Canceled {
			return fmt.Errorf("catalog watch from revision %d was cancelled by etcd", rev)
		}
		cur := c.cur.Load()
		if resp.IsProgressNotify() {
			if resp.Header.Revision > cur.rev {
				c.publish(cur.at(resp.Header.Revision))
			}
			continue
		}
		next, err := c.apply(cur, resp.Events, resp.Header.Revision)
		if err != nil {
			// A value that does not decode: start again from a Load, which reports it.
			return err
		}
		c.publish(next)
	}
	return fmt.Errorf("catalog watch from revision %d ended", rev)
}

// at is the snapshot at a later revision with the same content.
func (s *snapshot) at(rev int64) *snapshot {
	next := &snapshot{rev: rev, idx: s.idx, cfg: s.cfg, shards: s.shards, migs: s.migs, revs: s.revs,
		changed: make(chan struct{}), same: s}
	if s.same != nil {
		next.same = s.same
	}
	return next
}

// apply returns a new snapshot with the events applied. Events that touch no catalog state
// (stats, history, locks) only move the revision.
func (c *Cache) apply(cur *snapshot, evs []*clientv3.Event, rev int64) (*snapshot, error) {
	next := cur.at(rev)
	var edit *indexEdit
	copied := map[string]bool{} // which of next's maps are its own already
	own := func(what string) {
		if copied[what] {
			return
		}
		copied[what] = true
		next.same = nil
		switch what {
		case "shards":
			next.shards = maps.Clone(cur.shards)
		case "migs":
			next.migs = maps.Clone(cur.migs)
		case "revs":
			next.revs = maps.Clone(cur.revs)
		}
	}
	for _, ev := range evs {
		rel := c.s.rel(ev.Kv.Key)
		del := ev.Type == clientv3.EventTypeDelete
		var err error
		switch {
		case rel == keyConfig:
			own("revs")
			next.cfg = Config{}
			if !del {
				err = json.Unmarshal(ev.Kv.Value, &next.cfg)
			}
		case strings.HasPrefix(rel, pfxShards):
			own("revs")
			own("shards")
			delete(next.shards, strings.TrimPrefix(rel, pfxShards))
			if !del {
				var sh Shard
				if err = json.Unmarshal(ev.Kv.Value, &sh); err == nil {
					next.shards[sh.Name] = sh
				}
			}
		case strings.HasPrefix(rel, pfxRanges):
			lo, perr := ParseKeyHex(strings.TrimPrefix(rel, pfxRanges))
			if perr != nil {
				err = perr
				break
			}
			var r Range
			if !del {
				if err = json.Unmarshal(ev.Kv.Value, &r); err != nil {
					break
				}
			}
			if edit == nil {
				edit = cur.idx.edit()
				next.same = nil
			}
			edit.set(lo, r, ev.Kv.ModRevision, del)
			continue
		case strings.HasPrefix(rel, pfxMigrations):
			// A journal carries its own mod revision (Migration.ModRev): revs, which holds
			// every shard's, is not copied for it.
			own("migs")
			id := strings.TrimPrefix(rel, pfxMigrations)
			delete(next.migs, id)
			if !del {
				var m *Migration
				if m, err = decodeMigration(ev.Kv.Value, ev.Kv.ModRevision); err != nil {
					return nil, badValue(string(ev.Kv.Key), err)
				}
				next.migs[m.ID] = *m
			}
			continue
		default:
			continue
		}
		if err != nil {
			return nil, badValue(string(ev.Kv.Key), err)
		}
		if del {
			delete(next.revs, rel)
		} else {
			next.revs[rel] = ev.Kv.ModRevision
		}
	}
	if edit != nil {
		next.idx = edit.done()
	}
	return next, nil
}

// setRange puts or deletes the range starting at lo in a sorted slice.
func setRange(rs []Range, lo int64, r Range, del bool) []Range {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Range.Lo >= lo })
	found := i < len(rs) && rs[i].Range.Lo == lo
	switch {
	case del && found:
		return append(rs[:i], rs[i+1:]...)
	case del:
		return rs
	case found:
		rs[i] = r
		return rs
	}
	rs = append(rs, Range{})
	copy(rs[i+1:], rs[i:])
	rs[i] = r
	return rs
}

// Route is where a key goes: its range, owning shard, state and epoch, as of Revision.
type Route struct {
	Range    KeyRange `json:"range"`
	Shard    string   `json:"shard"`
	State    string   `json:"state"`
	Epoch    int64    `json:"epoch"`
	Revision int64    `json:"revision"`
}

// Resolver answers "which shard owns this tenant" from a watched Cache; it is what a
// router embeds. Resolve is a lock-free lookup in the current snapshot.
type Resolver struct{ c *Cache }

// NewResolver resolves keys from c.
func NewResolver(c *Cache) *Resolver { return &Resolver{c: c} }

// Resolve returns the route of key, a position on the key line: the key itself under
// range distribution, its hash under hash (ResolveKey takes the key). A frozen route means
// a cutover is fencing writes to its range: hold writes (WaitServing) and send them where
// the next route says.
func (r *Resolver) Resolve(key int64) (Route, error) {
	return resolve(r.c.cur.Load(), key)
}

func resolve(snap *snapshot, key int64) (Route, error) {
	rg, ok := snap.idx.find(key)
	if !ok {
		return Route{Revision: snap.rev}, fmt.Errorf("key %d is in no range at revision %d (is the catalog initialised?): %w", key, snap.rev, ErrNotFound)
	}
	return Route{Range: rg.Range, Shard: rg.Shard, State: rg.State, Epoch: rg.Epoch, Revision: snap.rev}, nil
}

// ResolveKey returns the route of a tenant key given in its own type: under hash
// distribution its range holds the key's hash, computed as PostgreSQL does (HashKey);
// under range, the key itself. A key of another type than the keyspace's is ErrBadKey.
func (r *Resolver) ResolveKey(key Key) (Route, error) {
	snap := r.c.cur.Load()
	pos, err := snap.cfg.Keyspace().Position(key)
	if err != nil {
		return Route{Revision: snap.rev}, err
	}
	return resolve(snap, pos)
}

// WaitServingKey is WaitServing for a key in its own type (see ResolveKey).
func (r *Resolver) WaitServingKey(ctx context.Context, key Key) (Route, error) {
	pos, err := r.c.cur.Load().cfg.Keyspace().Position(key)
	if err != nil {
		return Route{}, err
	}
	return r.WaitServing(ctx, pos)
}

// WaitServing returns the route of key once its range is serving, waiting while it is
// frozen (until ctx ends). A router calls it to hold a write during a cutover; the route it
// returns may name a new shard and epoch.
func (r *Resolver) WaitServing(ctx context.Context, key int64) (Route, error) {
	for {
		snap := r.c.cur.Load()
		rt, err := resolve(snap, key)
		if err == nil && rt.State == RangeServing {
			return rt, nil
		}
		select {
		case <-snap.changed:
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("range %s of key %d is still %s: %w", rt.Range, key, rt.State, ctx.Err())
			}
			return rt, err
		case <-r.c.done:
			return rt, errors.New("catalog watch stopped")
		}
	}
}
