package planner

import (
	"cmp"
	"fmt"
	"math"
	"sort"

	"github.com/reshard/reshard/catalog"
)

// hotKey is one tenant whose own load is known.
type hotKey struct {
	key    int64
	tenant string // the tenant key as text under hash distribution, when the stats know it
	bytes  float64
	writes float64
	load   float64
}

// unit is a range as the planner sees it: a catalog range, or a part of one that a planned
// split creates. Its load is hot tenants (known positions) plus a "cold" rest whose position
// is modelled by g (see fracBelow).
type unit struct {
	r      catalog.KeyRange
	home   int // shard index before the plan
	shard  int // shard index after the steps so far
	bytes  float64
	writes float64
	load   float64

	hots   []hotKey  // inside r, ascending key
	prefix []float64 // prefix[i] = load of hots[:i]

	coldBytes, coldWrites, coldLoad float64
	// The cold rest is spread evenly over [spanLo, spanHi) when placeable; otherwise its
	// position is unknown and only hot-key boundaries are cut points (half of it is assumed
	// on each outer side of a cut).
	spanLo, spanHi float64
	placeable      bool

	single bool   // one tenant (one key, or stats say one distinct key): never split
	pinned string // why it can neither move nor split; empty when it can

	origin  int // index of the catalog range it belongs to
	parent  int // unit it was cut from, -1 for a catalog range
	splitBy int // split record that replaced it, -1 while it is whole
	moved   bool
}

// world is the planner's working copy of the catalog.
type world struct {
	opts   Options
	upper  float64 // 1 + threshold
	lower  float64 // 1 - threshold
	wb, ww float64 // load per byte, per write/s

	names  []string // shard names, sorted
	states []string
	active []bool
	load   []float64 // per shard, current
	bytes  []float64
	writes []float64

	ranges []catalog.Range // catalog ranges, sorted by Lo
	units  []unit          // the catalog ranges first (same index), then parts of splits
	splits []splitRec
	moves  []moveRec
	count  []int // whole units per shard, once counted
	notes  []string

	movedBytes float64

	totalBytes, totalWrites float64
	noStats                 bool
}

func (w *world) notef(format string, args ...any) {
	w.notes = append(w.notes, fmt.Sprintf(format, args...))
}

// endF is the exclusive end of r on the float key line.
func endF(r catalog.KeyRange) float64 {
	if r.HiInf {
		return math.Exp2(63)
	}
	return float64(r.Hi)
}

// lastKey is the largest key in r.
func lastKey(r catalog.KeyRange) int64 {
	if r.HiInf {
		return math.MaxInt64
	}
	return r.Hi - 1
}

// buildWorld checks the input and turns it into units with loads. Loads are scaled so that
// the mean over active shards is 1.
func buildWorld(state *catalog.State, stats *catalog.Stats, opts Options) (*world, error) {
	if state == nil {
		return nil, fmt.Errorf("%w: no catalog state: load it with the catalog store first", ErrInput)
	}
	if err := catalog.ValidateRanges(state.Ranges, state.Shards); err != nil {
		return nil, fmt.Errorf("%w: %w; fix the catalog before planning", ErrInput, err)
	}
	w := &world{opts: opts, upper: 1 + opts.Threshold, lower: 1 - opts.Threshold}
	index, nActive, err := w.addShards(state.Shards)
	if err != nil {
		return nil, err
	}
	w.addRanges(state.Ranges, index)
	w.pinMigrations(state.Migrations)
	if stats == nil {
		stats = &catalog.Stats{}
	}
	if err := w.addRangeStats(stats.Ranges); err != nil {
		return nil, err
	}
	w.addHotKeys(stats.HotKeys)
	w.sumUnits()
	w.weigh(nActive)
	w.loadShards()
	return w, nil
}

// addShards lists the shards by name with their states; it returns each name's index and
// how many shards are active.
func (w *world) addShards(shards map[string]catalog.Shard) (map[string]int, int, error) {
	w.names = make([]string, 0, len(shards))
	for name := range shards {
		w.names = append(w.names, name)
	}
	sort.Strings(w.names)
	index := make(map[string]int, len(w.names))
	nActive := 0
	for i, name := range w.names {
		index[name] = i
		st := shards[name].State
		if st == "" {
			st = catalog.ShardActive
		}
		switch st {
		case catalog.ShardActive:
			nActive++
			w.active = append(w.active, true)
		case catalog.ShardDraining:
			w.active = append(w.active, false)
		default:
			return nil, 0, fmt.Errorf("%w: shard %s has state %q: set it to active or draining", ErrInput, name, st)
		}
		w.states = append(w.states, st)
	}
	if nActive == 0 {
		return nil, 0, fmt.Errorf("%w: every shard is draining, so no shard can take their ranges: add a shard with `reshard shard add`", ErrInput)
	}
	return index, nActive, nil
}

// addRanges makes a unit of each catalog range, in key order; a frozen range or one in a
// migration is pinned to its shard.
func (w *world) addRanges(ranges []catalog.Range, index map[string]int) {
	w.ranges = append([]catalog.Range(nil), ranges...)
	sort.Slice(w.ranges, func(i, j int) bool { return w.ranges[i].Range.Lo < w.ranges[j].Range.Lo })
	// Room for the parts of splits, so cutting does not copy every unit again.
	w.units = make([]unit, len(w.ranges), len(w.ranges)+len(w.ranges)/8+1024)
	for i, r := range w.ranges {
		u := &w.units[i]
		u.r = r.Range
		u.home = index[r.Shard]
		u.shard = u.home
		u.origin = i
		u.parent = -1
		u.splitBy = -1
		u.single = !r.Range.HiInf && r.Range.Hi-r.Range.Lo == 1
		switch {
		case r.State == catalog.RangeFrozen:
			u.pinned = fmt.Sprintf("range %s is frozen for a cutover (migration %s)", r.Range, orNone(r.Migration))
		case r.Migration != "":
			u.pinned = fmt.Sprintf("range %s is being migrated (migration %s)", r.Range, r.Migration)
		}
	}
}

// pinMigrations pins every unit an unfinished migration overlaps: the range is being
// copied or cut over, and planning another step for it would race that migration.
func (w *world) pinMigrations(migrations map[string]catalog.Migration) {
	ids := make([]string, 0, len(migrations))
	for id := range migrations {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := migrations[id]
		if m.Terminal() {
			continue
		}
		for i := range w.units {
			if u := &w.units[i]; u.pinned == "" && u.r.Overlaps(m.Range) {
				u.pinned = fmt.Sprintf("range %s has migration %s in phase %s", u.r, orNone(m.ID), m.Phase)
			}
		}
	}
}

// sumUnits settles each unit's bytes and writes from its stats and hot tenants, and adds
// them to the fleet's totals.
func (w *world) sumUnits() {
	for i := range w.units {
		u := &w.units[i]
		var hb, hw float64
		for _, h := range u.hots {
			hb += h.bytes
			hw += h.writes
		}
		// Top-K tenants and range totals are measured separately; a range is at least as big
		// as the tenants known to be in it.
		u.bytes = math.Max(u.bytes, hb)
		u.writes = math.Max(u.writes, hw)
		u.coldBytes = u.bytes - hb
		u.coldWrites = u.writes - hw
		w.totalBytes += u.bytes
		w.totalWrites += u.writes
		u.setSpan(u.r)
	}
}

// weigh sets the load of a byte and of a write/s for the strategy, so that the mean load
// over the nActive active shards is 1; with nothing to weigh the world has no stats.
func (w *world) weigh(nActive int) {
	n := float64(nActive)
	switch w.opts.Strategy {
	case StrategySize:
		if w.totalBytes > 0 {
			w.wb = n / w.totalBytes
		}
	case StrategyWrites:
		if w.totalWrites > 0 {
			w.ww = n / w.totalWrites
		}
	default:
		switch {
		case w.totalBytes > 0 && w.totalWrites > 0:
			w.wb, w.ww = n/(2*w.totalBytes), n/(2*w.totalWrites)
		case w.totalBytes > 0:
			w.wb = n / w.totalBytes
		case w.totalWrites > 0:
			w.ww = n / w.totalWrites
		}
	}
	if w.wb == 0 && w.ww == 0 {
		w.noStats = true
		what := "bytes or writes"
		switch w.opts.Strategy {
		case StrategySize:
			what = "bytes"
		case StrategyWrites:
			what = "writes/s"
		}
		w.notef("the stats show no %s, so there is no load to balance: run `reshard stats collect` first (draining still works)", what)
	}
}

// loadShards gives every unit its load and sums units into their shards.
func (w *world) loadShards() {
	ns := len(w.names)
	w.load = make([]float64, ns)
	w.bytes = make([]float64, ns)
	w.writes = make([]float64, ns)
	for i := range w.units {
		u := &w.units[i]
		w.finishUnit(u)
		w.load[u.shard] += u.load
		w.bytes[u.shard] += u.bytes
		w.writes[u.shard] += u.writes
	}
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// addRangeStats adds each stats range to the catalog ranges it overlaps. Stats made before a
// split or a move still apply: a stats range covering several catalog ranges is shared out
// in proportion to key-space overlap.
func (w *world) addRangeStats(in []catalog.RangeStats) error {
	rs := append([]catalog.RangeStats(nil), in...)
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i].Range, rs[j].Range
		if a.Lo != b.Lo {
			return a.Lo < b.Lo
		}
		return endF(a) < endF(b)
	})
	for i, s := range rs {
		if s.Range.Empty() {
			return fmt.Errorf("%w: stats for the empty range %s: re-run `reshard stats collect`", ErrInput, s.Range)
		}
		if s.Bytes < 0 || s.WritesPerSec < 0 || math.IsNaN(s.WritesPerSec) || math.IsInf(s.WritesPerSec, 0) {
			return fmt.Errorf("%w: stats for range %s have bytes %d and writes/s %v: re-run `reshard stats collect`", ErrInput, s.Range, s.Bytes, s.WritesPerSec)
		}
		if i > 0 && rs[i-1].Range.Overlaps(s.Range) {
			return fmt.Errorf("%w: stats for ranges %s and %s overlap: re-run `reshard stats collect`", ErrInput, rs[i-1].Range, s.Range)
		}
		first := sort.Search(len(w.ranges), func(k int) bool {
			r := w.ranges[k].Range
			return r.HiInf || r.Hi > s.Range.Lo
		})
		if first < len(w.ranges) && w.ranges[first].Range.Covers(s.Range) {
			u := &w.units[first]
			u.bytes += float64(s.Bytes)
			u.writes += s.WritesPerSec
			if s.Keys == 1 && w.ranges[first].Range.Equal(s.Range) {
				u.single = true
			}
			continue
		}
		size := s.Range.Size()
		for k := first; k < len(w.ranges) && w.ranges[k].Range.Overlaps(s.Range); k++ {
			r := w.ranges[k].Range
			lo := math.Max(float64(r.Lo), float64(s.Range.Lo))
			hi := math.Min(endF(r), endF(s.Range))
			f := (hi - lo) / size
			w.units[k].bytes += f * float64(s.Bytes)
			w.units[k].writes += f * s.WritesPerSec
		}
	}
	return nil
}

// addHotKeys files each tenant under the catalog range holding it. A tenant listed twice
// (top by bytes and top by writes) keeps the larger of each figure.
func (w *world) addHotKeys(in []catalog.HotKey) {
	hk := append([]catalog.HotKey(nil), in...)
	sort.Slice(hk, func(i, j int) bool { return hk[i].Key < hk[j].Key })
	for i := 0; i < len(hk); i++ {
		h := hotKey{key: hk[i].Key, tenant: hk[i].Tenant, bytes: math.Max(0, float64(hk[i].Bytes)), writes: finitePos(hk[i].WritesPerSec)}
		for i+1 < len(hk) && hk[i+1].Key == h.key {
			i++
			h.tenant = cmp.Or(h.tenant, hk[i].Tenant)
			h.bytes = math.Max(h.bytes, float64(hk[i].Bytes))
			h.writes = math.Max(h.writes, finitePos(hk[i].WritesPerSec))
		}
		k := sort.Search(len(w.ranges), func(j int) bool { return w.ranges[j].Range.Lo > h.key }) - 1
		if k < 0 {
			continue // cannot happen on a validated catalog: the first range starts at MinInt64
		}
		w.units[k].hots = append(w.units[k].hots, h)
	}
}

func finitePos(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return f
}

// setSpan decides where the cold rest of a catalog range is assumed to be. A bounded range
// spreads it evenly over its keys. An unbounded side is closed at the outermost hot tenant,
// since tenants are usually numbered from a small base. When at least two hot tenants sit in
// under 1% of a bounded range, the keys are taken to cluster there too (a wide initial range
// over small tenant ids). A span of one key or less is "unknown position".
func (u *unit) setSpan(r catalog.KeyRange) {
	lo, hi := float64(r.Lo), endF(r)
	if len(u.hots) > 0 {
		hLo, hHi := float64(u.hots[0].key), float64(u.hots[len(u.hots)-1].key)+1
		if r.LoUnbounded() {
			lo = hLo
		}
		if r.HiInf {
			hi = hHi
		}
		if len(u.hots) >= 2 && !r.LoUnbounded() && !r.HiInf && (hHi-hLo) < 0.01*(hi-lo) {
			lo, hi = hLo, hHi
		}
	} else if r.LoUnbounded() || r.HiInf {
		lo, hi = 0, 0
	}
	u.spanLo, u.spanHi = lo, hi
	u.placeable = hi-lo > 1
}

// finishUnit computes loads from bytes and writes with the strategy's weights.
func (w *world) finishUnit(u *unit) {
	u.prefix = make([]float64, len(u.hots)+1)
	for i := range u.hots {
		h := &u.hots[i]
		h.load = w.wb*h.bytes + w.ww*h.writes
		u.prefix[i+1] = u.prefix[i] + h.load
	}
	u.coldLoad = w.wb*u.coldBytes + w.ww*u.coldWrites
	u.load = w.wb*u.bytes + w.ww*u.writes
}

// fracBelow is the share of u's cold rest on keys below x, for lo < x <= last key + 1.
func (u *unit) fracBelow(x float64) float64 {
	if x <= float64(u.r.Lo) {
		return 0
	}
	if x >= endF(u.r) {
		return 1
	}
	if !u.placeable {
		return 0.5
	}
	f := (x - u.spanLo) / (u.spanHi - u.spanLo)
	return math.Min(1, math.Max(0, f))
}

// hotBelow is the load of u's hot tenants with a key below x.
func (u *unit) hotBelow(x int64) float64 {
	i := sort.Search(len(u.hots), func(i int) bool { return u.hots[i].key >= x })
	return u.prefix[i]
}

// loadBelow is the estimated load of u's keys below the cut x (Lo < x <= last key).
func (u *unit) loadBelow(x int64) float64 {
	return u.hotBelow(x) + u.coldLoad*u.fracBelow(float64(x))
}

// heaviestHot is u's hot tenant with the largest load (smallest key on a tie).
func (u *unit) heaviestHot() (hotKey, bool) {
	best := -1
	for i, h := range u.hots {
		if best < 0 || h.load > u.hots[best].load {
			best = i
		}
	}
	if best < 0 {
		return hotKey{}, false
	}
	return u.hots[best], true
}
