package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// defaultPageSize keeps one read's reply to about a megabyte of ranges: a million-range
// catalog in one Get would be a reply of over a hundred megabytes, held twice in memory
// (protobuf and decoded) and blocking etcd's other readers while it is built.
const defaultPageSize = 5000

// loadAttempts bounds the restarts of a paged read whose revision was compacted under it.
const loadAttempts = 3

// Load reads the whole cluster state (config, shards, ranges, migrations) at one etcd
// revision. A small catalog is one read-only transaction; a bigger one is read on in pages
// of the same revision (WithPageSize), so the State is still one consistent snapshot. It
// returns ErrNotFound when there is no catalog.
func (s *Store) Load(ctx context.Context) (*State, error) {
	var into stateRanges
	st, err := s.load(ctx, &into)
	if err != nil {
		return nil, err
	}
	st.Ranges = into.rs
	for i, r := range st.Ranges {
		st.ModRev[RangeKey(r.Range.Lo)] = into.revs[i]
	}
	return st, nil
}

// LoadRange reads, in one read-only transaction, what a write of the range starting at lo
// (Freeze, Unfreeze, Flip) needs: the config, that range and the named shards, each with
// its mod revision. The State holds only those: Ranges is that one range (empty if no
// range starts at lo), Shards the named ones that exist, Migrations nil. It reads a few
// keys however big the catalog is, where Load reads every range (seconds at a million);
// the writes compare the same revisions on it as on a full State (the range's; the
// migration's comes from the migration itself).
func (s *Store) LoadRange(ctx context.Context, lo int64, shards ...string) (*State, error) {
	ops := []clientv3.Op{clientv3.OpGet(s.key(keyConfig)), clientv3.OpGet(s.key(RangeKey(lo)))}
	for _, name := range shards {
		ops = append(ops, clientv3.OpGet(s.key(ShardKey(name))))
	}
	resp, err := s.read(ctx, ops...)
	if err != nil {
		return nil, fmt.Errorf("read range %d of the catalog: %w", lo, s.wrapEtcd(err))
	}
	st, err := s.configState(resp.Header.Revision, resp.Responses[0].GetResponseRange().Kvs)
	if err != nil {
		return nil, err
	}
	var into stateRanges
	d := &loadDecoder{s: s, st: st, sink: &into, names: map[string]string{}}
	for _, r := range resp.Responses[1:] {
		for _, kv := range r.GetResponseRange().Kvs {
			if err := d.decode(kv); err != nil {
				return nil, err
			}
		}
	}
	st.Ranges, st.Migrations = into.rs, nil
	for i, r := range st.Ranges {
		st.ModRev[RangeKey(r.Range.Lo)] = into.revs[i]
	}
	return st, nil
}

// configState is an empty State at revision rev with the config read as cfg.
func (s *Store) configState(rev int64, cfg []*mvccKV) (*State, error) {
	if len(cfg) == 0 {
		return nil, s.notFoundCatalog()
	}
	st := &State{
		Revision:   rev,
		Shards:     map[string]Shard{},
		Migrations: map[string]Migration{},
		ModRev:     map[string]int64{},
	}
	if err := json.Unmarshal(cfg[0].Value, &st.Config); err != nil {
		return nil, badValue(string(cfg[0].Key), err)
	}
	st.ModRev[keyConfig] = cfg[0].ModRevision
	return st, nil
}

// rangeSink receives the ranges of a load in key order; reset starts it again when the
// load restarts.
type rangeSink interface {
	add(r Range, modRev int64)
	reset()
}

// stateRanges collects a load's ranges for a State.
type stateRanges struct {
	rs   []Range
	revs []int64
}

func (c *stateRanges) add(r Range, rev int64) { c.rs, c.revs = append(c.rs, r), append(c.revs, rev) }
func (c *stateRanges) reset()                 { c.rs, c.revs = nil, nil }

// load reads config, shards and migrations into a State (ModRev without range keys) and
// hands the ranges, sorted by Lo, to sink. A revision compacted between two pages starts
// the read again, at most loadAttempts times.
func (s *Store) load(ctx context.Context, sink rangeSink) (*State, error) {
	for attempt := 1; ; attempt++ {
		sink.reset()
		st, err := s.loadOnce(ctx, sink)
		if err == nil || !errors.Is(err, rpctypes.ErrCompacted) || attempt == loadAttempts {
			return st, err
		}
	}
}

// loadPrefixes are the catalog's parts after the config, in the order load reads them.
var loadPrefixes = []string{pfxShards, pfxRanges, pfxMigrations}

// loadOnce's first request reads the config and the first page of each prefix in one
// transaction, so a catalog smaller than a page costs one round trip as before; a prefix
// with more keys is read on from its last key at the same revision.
func (s *Store) loadOnce(ctx context.Context, sink rangeSink) (*State, error) {
	limit := clientv3.WithLimit(int64(s.pageSize))
	ops := []clientv3.Op{clientv3.OpGet(s.key(keyConfig))}
	for _, p := range loadPrefixes {
		ops = append(ops, clientv3.OpGet(s.key(p), clientv3.WithPrefix(), limit))
	}
	resp, err := s.read(ctx, ops...)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", s.wrapEtcd(err))
	}
	st, err := s.configState(resp.Header.Revision, resp.Responses[0].GetResponseRange().Kvs)
	if err != nil {
		return nil, err
	}
	d := &loadDecoder{s: s, st: st, sink: sink, names: map[string]string{}}
	for i, p := range loadPrefixes {
		first := resp.Responses[i+1].GetResponseRange()
		err := s.scanFrom(ctx, s.key(p), clientv3.GetPrefixRangeEnd(s.key(p)), st.Revision, first.Kvs, first.More, d.decode)
		if err != nil {
			return nil, fmt.Errorf("read catalog at revision %d: %w", st.Revision, err)
		}
	}
	return st, nil
}

// scanFrom calls fn for every key of [from, end) at revision rev, in key order, reading
// pages of s.pageSize keys; kvs and more are a first page already read. opts are added to
// each read (e.g. clientv3.WithKeysOnly).
func (s *Store) scanFrom(ctx context.Context, from, end string, rev int64, kvs []*mvccKV, more bool, fn func(*mvccKV) error, opts ...clientv3.OpOption) error {
	for {
		for _, kv := range kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
		if len(kvs) > 0 {
			from = string(kvs[len(kvs)-1].Key) + "\x00"
		}
		resp, err := s.get(ctx, from, append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(int64(s.pageSize))}, opts...)...)
		if err != nil {
			return s.wrapEtcd(err)
		}
		kvs, more = resp.Kvs, resp.More
	}
}

// scan reads [from, end) in pages at one revision (0: the current one) and returns it.
func (s *Store) scan(ctx context.Context, from, end string, rev int64, fn func(*mvccKV) error, opts ...clientv3.OpOption) (int64, error) {
	first := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(s.pageSize))}, opts...)
	if rev != 0 {
		first = append(first, clientv3.WithRev(rev))
	}
	resp, err := s.get(ctx, from, first...)
	if err != nil {
		return 0, s.wrapEtcd(err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return rev, s.scanFrom(ctx, from, end, rev, resp.Kvs, resp.More, fn, opts...)
}

// loadDecoder decodes the keys of a load. Shard names and range states are interned: a
// million decoded ranges would otherwise hold a million copies of a few short strings.
type loadDecoder struct {
	s     *Store
	st    *State
	sink  rangeSink
	names map[string]string
}

func (d *loadDecoder) intern(v string) string {
	if w, ok := d.names[v]; ok {
		return w
	}
	d.names[v] = v
	return v
}

func (d *loadDecoder) decode(kv *mvccKV) error {
	rel := d.s.rel(kv.Key)
	switch {
	case strings.HasPrefix(rel, pfxShards):
		var sh Shard
		if err := json.Unmarshal(kv.Value, &sh); err != nil {
			return badValue(string(kv.Key), err)
		}
		d.st.Shards[sh.Name] = sh
		d.st.ModRev[rel] = kv.ModRevision
	case strings.HasPrefix(rel, pfxRanges):
		var r Range
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return badValue(string(kv.Key), err)
		}
		if rel != RangeKey(r.Range.Lo) {
			return badValue(string(kv.Key), fmt.Errorf("key does not match the range's lower bound %s", r.Range))
		}
		// The key was checked against the range's lower bound, and KeyHex orders as lo
		// does, so etcd's key order is Lo order: the sink gets them sorted.
		r.Shard, r.State = d.intern(r.Shard), d.intern(r.State)
		d.sink.add(r, kv.ModRevision)
	case strings.HasPrefix(rel, pfxMigrations):
		m, err := decodeMigration(kv.Value, kv.ModRevision)
		if err != nil {
			return badValue(string(kv.Key), err)
		}
		d.st.Migrations[m.ID] = *m
		d.st.ModRev[rel] = kv.ModRevision
	}
	return nil
}
