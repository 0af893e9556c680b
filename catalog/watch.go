package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache is a live copy of a cluster's State: it loads the state, then applies etcd watch
// events to it. Each etcd watch response carries whole revisions (a transaction's events
// are never split), and the cache publishes a new immutable State only after a whole
// response is applied, so a reader never sees half of a flip or a split. After a
// compaction or a broken watch it starts again from a fresh Load.
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
	st      *State
	changed chan struct{} // closed when a newer snapshot is published
}

// Watch loads the state and keeps it up to date until ctx ends or Close is called.
func (s *Store) Watch(ctx context.Context) (*Cache, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	return s.watchFrom(ctx, st, nil), nil
}

// NewStaticCache returns a Cache that holds st and never changes: for routing from a state
// read once (a Load, an imported export, a state built by hand in a test or an example)
// without etcd. Close ends a WaitServing or WaitRevision still waiting, as a stopped watch
// does.
func NewStaticCache(st *State) *Cache {
	done := make(chan struct{})
	var once sync.Once
	c := &Cache{cancel: func() { once.Do(func() { close(done) }) }, done: done}
	c.cur.Store(&snapshot{st: st, changed: make(chan struct{})})
	return c
}

func (s *Store) watchFrom(ctx context.Context, st *State, onPublish func(*State)) *Cache {
	ctx, cancel := context.WithCancel(ctx)
	c := &Cache{s: s, cancel: cancel, done: make(chan struct{}), onPublish: onPublish}
	c.cur.Store(&snapshot{st: st, changed: make(chan struct{})})
	go c.run(ctx)
	return c
}

// State is the current snapshot. It is shared: read it, do not modify it (Clone it to pass
// to a write).
func (c *Cache) State() *State { return c.cur.Load().st }

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
		if snap.st.Revision >= rev {
			return snap.st, nil
		}
		select {
		case <-snap.changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("catalog watch still at revision %d, waiting for %d: %w", snap.st.Revision, rev, ctx.Err())
		case <-c.done:
			return nil, errors.New("catalog watch stopped")
		}
	}
}

func (c *Cache) publish(st *State) {
	if c.onPublish != nil {
		c.onPublish(st)
	}
	next := &snapshot{st: st, changed: make(chan struct{})}
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
		st := c.State()
		err := c.follow(ctx, st.Revision+1)
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
			fresh, lerr := c.s.Load(ctx)
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
		cur := c.State()
		if resp.IsProgressNotify() {
			if resp.Header.Revision > cur.Revision {
				next := *cur
				next.Revision = resp.Header.Revision
				c.publish(&next)
			}
			continue
		}
		next, err := c.apply(cur, resp.Events, resp.Header.Revision)
		if err != nil {
			// A value that does not decode: start again from a Load, which reports it.
			return err
		}
		if next != nil {
			c.publish(next)
		}
	}
	return fmt.Errorf("catalog watch from revision %d ended", rev)
}

// apply returns a new State with the events applied, or nil if none touched the catalog
// state (stats, history, locks).
func (c *Cache) apply(cur *State, evs []*clientv3.Event, rev int64) (*State, error) {
	var next *State
	for _, ev := range evs {
		rel := c.s.rel(ev.Kv.Key)
		if rel != keyConfig && !strings.HasPrefix(rel, pfxShards) && !strings.HasPrefix(rel, pfxRanges) && !strings.HasPrefix(rel, pfxMigrations) {
			continue
		}
		if next == nil {
			next = cur.Clone()
		}
		del := ev.Type == clientv3.EventTypeDelete
		if del {
			delete(next.ModRev, rel)
		} else {
			next.ModRev[rel] = ev.Kv.ModRevision
		}
		var err error
		switch {
		case rel == keyConfig:
			next.Config = Config{}
			if !del {
				err = json.Unmarshal(ev.Kv.Value, &next.Config)
			}
		case strings.HasPrefix(rel, pfxShards):
			name := strings.TrimPrefix(rel, pfxShards)
			delete(next.Shards, name)
			if !del {
				var sh Shard
				if err = json.Unmarshal(ev.Kv.Value, &sh); err == nil {
					next.Shards[sh.Name] = sh
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
			next.Ranges = setRange(next.Ranges, lo, r, del)
		case strings.HasPrefix(rel, pfxMigrations):
			id := strings.TrimPrefix(rel, pfxMigrations)
			delete(next.Migrations, id)
			if !del {
				var m *Migration
				if m, err = decodeMigration(ev.Kv.Value, ev.Kv.ModRevision); err == nil {
					next.Migrations[m.ID] = *m
				}
			}
		}
		if err != nil {
			return nil, badValue(string(ev.Kv.Key), err)
		}
	}
	if next == nil {
		next = new(State)
		*next = *cur
	}
	next.Revision = rev
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

// Resolve returns the route of key. A frozen route means a cutover is fencing writes to
// its range: hold writes (WaitServing) and send them where the next route says.
func (r *Resolver) Resolve(key int64) (Route, error) {
	return resolve(r.c.State(), key)
}

func resolve(st *State, key int64) (Route, error) {
	rg, ok := st.Owner(key)
	if !ok {
		return Route{Revision: st.Revision}, fmt.Errorf("key %d is in no range at revision %d (is the catalog initialised?): %w", key, st.Revision, ErrNotFound)
	}
	return Route{Range: rg.Range, Shard: rg.Shard, State: rg.State, Epoch: rg.Epoch, Revision: st.Revision}, nil
}

// WaitServing returns the route of key once its range is serving, waiting while it is
// frozen (until ctx ends). A router calls it to hold a write during a cutover; the route it
// returns may name a new shard and epoch.
func (r *Resolver) WaitServing(ctx context.Context, key int64) (Route, error) {
	for {
		snap := r.c.cur.Load()
		rt, err := resolve(snap.st, key)
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
