package catalog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LoadStats reads every stats key at one revision.
func (s *Store) LoadStats(ctx context.Context) (*Stats, error) {
	out := &Stats{Shards: map[string]ShardStats{}}
	rev, err := s.scan(ctx, s.key(pfxStats), clientv3.GetPrefixRangeEnd(s.key(pfxStats)), 0, func(kv *mvccKV) error {
		return s.decodeStat(out, kv)
	})
	if err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	out.Revision = rev
	sort.Slice(out.Ranges, func(i, j int) bool { return out.Ranges[i].Range.Lo < out.Ranges[j].Range.Lo })
	sort.Slice(out.HotKeys, func(i, j int) bool { return out.HotKeys[i].Key < out.HotKeys[j].Key })
	return out, nil
}

// decodeStat adds one stats key to out.
func (s *Store) decodeStat(out *Stats, kv *mvccKV) error {
	rel := s.rel(kv.Key)
	var err error
	switch {
	case strings.HasPrefix(rel, pfxShardStats):
		var ss ShardStats
		err = json.Unmarshal(kv.Value, &ss)
		out.Shards[ss.Shard] = ss
	case strings.HasPrefix(rel, pfxRangeStats):
		var rs RangeStats
		err = json.Unmarshal(kv.Value, &rs)
		out.Ranges = append(out.Ranges, rs)
	case strings.HasPrefix(rel, pfxHotKeys):
		var hk HotKey
		err = json.Unmarshal(kv.Value, &hk)
		out.HotKeys = append(out.HotKeys, hk)
	}
	if err != nil {
		return badValue(string(kv.Key), err)
	}
	return nil
}

// PutStats replaces the measured stats with st: shard and range stats not in st are
// deleted, and so are hot keys not in st, except those that carry an application's own
// metrics (Custom), which are kept; a hot key in st keeps the Custom metrics already
// stored for it. Stats are not part of the ownership history.
//
// Stats larger than one transaction are written in batches, new keys first and stale ones
// deleted last, so a reader may briefly see a mix of old and new numbers but never loses a
// range's entry.
func (s *Store) PutStats(ctx context.Context, st *Stats) error {
	for attempt := 0; ; attempt++ {
		err := s.putStatsOnce(ctx, st)
		if !errors.Is(err, ErrConflict) || attempt >= 10 {
			if err != nil {
				return fmt.Errorf("write stats: %w", err)
			}
			return nil
		}
	}
}

func (s *Store) putStatsOnce(ctx context.Context, st *Stats) error {
	existing := map[string]*mvccKV{}
	_, err := s.scan(ctx, s.key(pfxStats), clientv3.GetPrefixRangeEnd(s.key(pfxStats)), 0, func(kv *mvccKV) error {
		existing[s.rel(kv.Key)] = kv
		return nil
	})
	if err != nil {
		return err
	}
	type item struct {
		rel string
		val any
		cmp int64 // mod revision to compare for hot keys we merge into; -1: none
	}
	var items []item
	want := map[string]bool{}
	for _, ss := range st.Shards {
		if !ValidName(ss.Shard) {
			return fmt.Errorf("%w: shard stats for %q: not a shard name", ErrInvalid, ss.Shard)
		}
		items = append(items, item{pfxShardStats + ss.Shard, ss, -1})
	}
	for _, rs := range st.Ranges {
		items = append(items, item{pfxRangeStats + KeyHex(rs.Range.Lo), rs, -1})
	}
	for _, hk := range st.HotKeys {
		rel := hotKeyKey(hk.Key)
		it := item{rel, hk, 0}
		if kv, ok := existing[rel]; ok {
			var old HotKey
			if json.Unmarshal(kv.Value, &old) == nil && len(old.Custom) > 0 {
				hk.Tenant = cmp.Or(hk.Tenant, old.Tenant)
				if hk.Custom == nil {
					hk.Custom = map[string]float64{}
				}
				for k, v := range old.Custom {
					if _, set := hk.Custom[k]; !set {
						hk.Custom[k] = v
					}
				}
				it.val = hk
			}
			it.cmp = kv.ModRevision
		}
		items = append(items, it)
	}
	for _, it := range items {
		want[it.rel] = true
	}
	sort.Slice(items, func(i, j int) bool { return items[i].rel < items[j].rel })
	var dels []string
	for rel, kv := range existing {
		if want[rel] {
			continue
		}
		if strings.HasPrefix(rel, pfxHotKeys) {
			var old HotKey
			if json.Unmarshal(kv.Value, &old) == nil && len(old.Custom) > 0 {
				continue
			}
		}
		dels = append(dels, rel)
	}
	sort.Strings(dels)
	batch := s.maxTxnOps / 2 // a hot key may carry one compare per put
	for len(items) > 0 {
		var w write
		for _, it := range items {
			if err := w.put(s, it.rel, it.val); err != nil {
				return err
			}
			if len(w.ops) > batch || (len(w.ops) > 1 && opBytes(w.ops) > s.maxTxnBytes) {
				w.ops = w.ops[:len(w.ops)-1] // the next batch's
				break
			}
			if it.cmp >= 0 {
				w.cmpRev(s, it.rel, it.cmp)
			}
		}
		items = items[len(w.ops):]
		if _, err := s.commit(ctx, &w); err != nil {
			return err
		}
	}
	for len(dels) > 0 {
		n := min(s.maxTxnOps, len(dels))
		var w write
		for _, rel := range dels[:n] {
			w.ops = append(w.ops, clientv3.OpDelete(s.key(rel)))
		}
		dels = dels[n:]
		if _, err := s.commit(ctx, &w); err != nil {
			return err
		}
	}
	return nil
}

var metricRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// PutHotKeyCustom merges an application's own metrics for one key (e.g. read_qps=120) into
// its hot-key record, creating it if needed. Concurrent callers do not lose each other's
// metrics: the merge is retried on a lost race.
func (s *Store) PutHotKeyCustom(ctx context.Context, key int64, metrics map[string]float64) error {
	return s.putCustom(ctx, HotKey{Key: key}, metrics)
}

// PutTenantCustom is PutHotKeyCustom for a tenant key written as text (`stats put --key`),
// placed on the key line as the catalog places it: the key itself under range, its hash
// under hash, where the record also keeps the key in PostgreSQL's text form so output can
// name it. A key not of the keyspace's type is refused (ErrBadKey) and nothing is written.
func (s *Store) PutTenantCustom(ctx context.Context, tenant string, metrics map[string]float64) (HotKey, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return HotKey{}, err
	}
	ks := st.Config.Keyspace()
	key, err := ParseKey(ks.KeyType(), tenant)
	if err != nil {
		return HotKey{}, fmt.Errorf("%w (the keyspace's keys are %s)", err, ks.KeyType())
	}
	hk := HotKey{}
	if hk.Key, err = ks.Position(key); err != nil {
		return HotKey{}, err
	}
	if ks.Hashed() {
		hk.Tenant = key.String()
	}
	return hk, s.putCustom(ctx, hk, metrics)
}

func checkMetrics(metrics map[string]float64) error {
	if len(metrics) == 0 {
		return fmt.Errorf("%w: no metric given: pass --metric NAME=VALUE", ErrInvalid)
	}
	var p Problems
	for name, v := range metrics {
		if !metricRE.MatchString(name) {
			p.add("metric name %q: use lower-case letters, digits and _, e.g. read_qps", name)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			p.add("metric %s: value must be a finite number", name)
		}
	}
	return p.Err()
}

// putCustom merges metrics into the record of id.Key, naming it id.Tenant when the record
// has no name yet.
func (s *Store) putCustom(ctx context.Context, id HotKey, metrics map[string]float64) error {
	if err := checkMetrics(metrics); err != nil {
		return err
	}
	key, rel := id.Key, hotKeyKey(id.Key)
	for attempt := 0; attempt < 20; attempt++ {
		resp, err := s.get(ctx, s.key(rel))
		if err != nil {
			return fmt.Errorf("read hot key %d: %w", key, s.wrapEtcd(err))
		}
		hk := HotKey{Key: key}
		var rev int64
		if len(resp.Kvs) > 0 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &hk); err != nil {
				return badValue(string(resp.Kvs[0].Key), err)
			}
			rev = resp.Kvs[0].ModRevision
		} else if st, err := s.Load(ctx); err == nil {
			if r, ok := st.Owner(key); ok {
				hk.Shard = r.Shard
			}
		}
		hk.Tenant = cmp.Or(hk.Tenant, id.Tenant)
		if hk.Custom == nil {
			hk.Custom = map[string]float64{}
		}
		for k, v := range metrics {
			hk.Custom[k] = v
		}
		var w write
		w.cmpRev(s, rel, rev)
		if err := w.put(s, rel, hk); err != nil {
			return err
		}
		if _, err := s.commit(ctx, &w); err == nil {
			return nil
		} else if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("write hot key %d: %w", key, err)
		}
	}
	return fmt.Errorf("write hot key %d: %w", key, ErrConflict)
}

// TenantLoad is what one shard measured for one tenant key.
type TenantLoad struct {
	Tenant string // the tenant key as text under hash distribution (the map's key is its hash)
	Bytes  int64
	Rows   int64
	Writes int64 // row changes seen during the write sample
}

// ShardMeasurement is what `stats collect` measured on one shard.
type ShardMeasurement struct {
	Shard         string
	Tables        map[string]TableStats
	Tenants       map[int64]TenantLoad
	SampleSeconds float64 // length of the write sample; 0 when writes were not sampled
	At            time.Time
}

// ComputeStats turns per-shard measurements into catalog stats. A range's numbers come from
// its owning shard only (rows of its keys elsewhere are leftovers of a move and belong to
// no range); its writes/s is the sum over its tenants. Hot keys are the union of the top-K
// tenants by bytes and the top-K by writes/s, plus the keys in include (those an
// application annotated), each with its numbers from its owning shard.
func ComputeStats(st *State, ms []ShardMeasurement, topK int, include []int64) *Stats {
	out := &Stats{Shards: map[string]ShardStats{}}
	byShard := map[string]*ShardMeasurement{}
	for i := range ms {
		m := &ms[i]
		byShard[m.Shard] = m
		ss := ShardStats{Shard: m.Shard, Tables: map[string]TableStats{}, CollectedAt: m.At.UTC()}
		for t, ts := range m.Tables {
			ss.Tables[t] = ts
			ss.Bytes += ts.Bytes
			ss.Rows += ts.Rows
		}
		out.Shards[m.Shard] = ss
	}
	type cand struct {
		key   int64
		shard string
		load  TenantLoad
		wps   float64
	}
	var owned []cand
	for _, r := range st.Ranges {
		rs := RangeStats{Range: r.Range, Shard: r.Shard}
		m := byShard[r.Shard]
		if m == nil {
			continue // not measured (unreachable shard): no numbers rather than zeros
		}
		rs.CollectedAt = m.At.UTC()
		var writes int64
		for k, tl := range m.Tenants {
			if !r.Range.Contains(k) {
				continue
			}
			rs.Bytes += tl.Bytes
			rs.Rows += tl.Rows
			rs.Keys++
			writes += tl.Writes
			owned = append(owned, cand{k, r.Shard, tl, perSec(tl.Writes, m.SampleSeconds)})
		}
		rs.WritesPerSec = perSec(writes, m.SampleSeconds)
		out.Ranges = append(out.Ranges, rs)
	}
	pick := map[int64]bool{}
	if topK > 0 {
		sort.Slice(owned, func(i, j int) bool {
			if owned[i].load.Bytes != owned[j].load.Bytes {
				return owned[i].load.Bytes > owned[j].load.Bytes
			}
			return owned[i].key < owned[j].key
		})
		for i := 0; i < len(owned) && i < topK; i++ {
			pick[owned[i].key] = true
		}
		sort.Slice(owned, func(i, j int) bool {
			if owned[i].wps != owned[j].wps {
				return owned[i].wps > owned[j].wps
			}
			return owned[i].key < owned[j].key
		})
		for i := 0; i < len(owned) && i < topK && owned[i].wps > 0; i++ {
			pick[owned[i].key] = true
		}
	}
	for _, k := range include {
		pick[k] = true
	}
	for _, c := range owned {
		if !pick[c.key] {
			continue
		}
		delete(pick, c.key)
		out.HotKeys = append(out.HotKeys, HotKey{Key: c.key, Tenant: c.load.Tenant, Shard: c.shard, Bytes: c.load.Bytes, Rows: c.load.Rows,
			WritesPerSec: c.wps, CollectedAt: byShard[c.shard].At.UTC()})
	}
	sort.Slice(out.HotKeys, func(i, j int) bool { return out.HotKeys[i].Key < out.HotKeys[j].Key })
	return out
}

func perSec(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return math.Round(float64(n)/secs*1000) / 1000
}

// ParseMetric parses NAME=VALUE for `stats put --metric`.
func ParseMetric(s string) (string, float64, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return "", 0, fmt.Errorf("metric %q: write NAME=VALUE, e.g. read_qps=120", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
	if err != nil {
		return "", 0, fmt.Errorf("metric %q: value %q is not a number", s, val)
	}
	return strings.TrimSpace(name), v, nil
}
