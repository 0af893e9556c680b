package planner

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/reshard/reshard/catalog"
)

// ErrInput wraps every reason the catalog state or stats cannot be planned from.
var ErrInput = errors.New("cannot plan")

// Compute turns a catalog snapshot and its stats into a plan. It is pure: it reads nothing
// but its arguments, changes none of them, and returns the same plan for the same input,
// whatever the order of ranges, stats and hot keys in it. A nil stats means "no stats".
func Compute(state *catalog.State, stats *catalog.Stats, opts Options) (*Plan, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.normalized()
	w, err := buildWorld(state, stats, opts)
	if err != nil {
		return nil, err
	}
	nOrig := len(w.units)
	before := w.snapshot()
	lb := w.lowerBound()
	floor := w.bytesFloor()
	maxBefore := w.maxMean()

	balanced := w.balanced()
	if !balanced {
		w.balance()
	}
	keep := w.prune()

	p := &Plan{
		Version:       FormatVersion,
		Cluster:       state.Config.Cluster,
		Revision:      state.Revision,
		Options:       opts,
		Steps:         []Step{},
		Ranges:        []RangeRevision{},
		LowerBound:    r4(lb),
		MaxMeanBefore: r4(maxBefore),
		BytesFloor:    int64(math.Round(floor)),
		Balanced:      balanced,
	}
	if stats != nil {
		p.StatsRevision = stats.Revision
	}
	touched := map[int]bool{}
	w.addSplits(p, keep, touched)
	drained := w.addMoves(p, touched)
	p.MaxMeanAfter = r4(w.maxMean())

	// A rebalance never raises the largest load (every move lowers the larger of its two
	// shards); draining may, since the drained load has to go somewhere.
	if !drained && w.maxMean() > maxBefore+1e-9 {
		return nil, fmt.Errorf("planner: internal error: the plan would raise max/mean from %.4f to %.4f; please report it with the catalog and stats", maxBefore, w.maxMean())
	}

	for i := range p.Steps {
		p.Steps[i].N = i + 1
	}
	w.addRangeRevisions(p, state, touched)
	w.addShardLoads(p, before, w.rangesAfter(nOrig, keep))
	p.Notes = append(p.Notes, w.notes...)
	if !balanced && !w.noStats {
		if note := w.outsideNote(opts.Threshold, lb); note != "" {
			p.Notes = append(p.Notes, note)
		}
	}
	p.ID = planID(p)
	return p, nil
}

// balance plans the steps of an unbalanced fleet: split what no shard can hold, empty the
// draining shards, then even out the loads.
func (w *world) balance() {
	if !w.noStats {
		w.splitOversized()
	}
	w.countUnits()
	w.drain()
	if !w.noStats {
		w.rebalance()
	}
}

// addSplits adds a step for each kept split and marks the catalog range it cuts as touched.
func (w *world) addSplits(p *Plan, keep []bool, touched map[int]bool) {
	for i, sr := range w.splits {
		if !keep[i] {
			continue
		}
		u := &w.units[sr.unit]
		st := Step{
			Kind: StepSplit, Range: u.r, At: sr.at, From: w.names[u.home],
			Bytes: int64(math.Round(u.bytes)), WritesPerSec: r2(u.writes), Load: r4(u.load), Reason: sr.reason,
		}
		if sr.isolate != nil {
			st.Isolate, st.IsolateTenant = &sr.isolate.key, sr.isolate.tenant
		}
		for _, pi := range sr.parts {
			st.Parts = append(st.Parts, w.units[pi].r)
		}
		p.Steps = append(p.Steps, st)
		p.Splits++
		touched[u.origin] = true
	}
}

// addMoves adds a step for each move and its bytes and writes to the plan's totals; it
// says whether any move drains a shard.
func (w *world) addMoves(p *Plan, touched map[int]bool) (drained bool) {
	var movedBytes float64
	for _, m := range w.moves {
		u := &w.units[m.unit]
		p.Steps = append(p.Steps, Step{
			Kind: StepMove, Range: u.r, From: w.names[m.from], To: w.names[m.to], Drain: m.drain,
			Bytes: int64(math.Round(u.bytes)), WritesPerSec: r2(u.writes), Load: r4(u.load), Reason: m.reason,
		})
		p.Moves++
		movedBytes += u.bytes
		p.WritesMoved += u.writes
		touched[u.origin] = true
		drained = drained || m.drain
	}
	p.BytesToMove = int64(math.Round(movedBytes))
	p.WritesMoved = r2(p.WritesMoved)
	return drained
}

// addRangeRevisions records the revision of every catalog range the plan touches, in key
// order, so that apply can refuse a plan whose ranges changed since.
func (w *world) addRangeRevisions(p *Plan, state *catalog.State, touched map[int]bool) {
	origins := make([]int, 0, len(touched))
	for o := range touched {
		origins = append(origins, o)
	}
	sort.Ints(origins)
	rk := newRevLookup(state)
	for _, o := range origins {
		r := w.ranges[o].Range
		key, rev := rk.lookup(r.Lo)
		p.Ranges = append(p.Ranges, RangeRevision{Range: r, Key: key, ModRevision: rev})
	}
}

// addShardLoads adds every shard's ranges, bytes, writes and load before and after the plan.
func (w *world) addShardLoads(p *Plan, before shardTotals, after []int) {
	for s, name := range w.names {
		p.Shards = append(p.Shards, ShardLoad{
			Shard: name, State: w.states[s],
			Ranges: before.count[s], RangesAfter: after[s],
			Bytes: int64(math.Round(before.bytes[s])), BytesAfter: int64(math.Round(w.bytes[s])),
			WritesPerSec: r2(before.writes[s]), WritesPerSecAfter: r2(w.writes[s]),
			Load: r4(before.load[s]), LoadAfter: r4(w.load[s]),
		})
	}
}

// outsideNote names the active shards the plan leaves outside the threshold (the first
// five), or returns "" when there are none.
func (w *world) outsideNote(threshold, lb float64) string {
	var out []string
	for s := range w.names {
		if w.active[s] && (w.load[s] > w.upper+1e-6 || w.load[s] < w.lower-1e-6) {
			out = append(out, fmt.Sprintf("%s %.2fx", w.names[s], w.load[s]))
		}
	}
	if len(out) == 0 {
		return ""
	}
	shown := out
	if len(shown) > 5 {
		shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return fmt.Sprintf("%d shard(s) stay outside %.0f%% of the mean (%s); the lower bound is %.2fx",
		len(out), 100*threshold, strings.Join(shown, ", "), lb)
}

type shardTotals struct {
	load, bytes, writes []float64
	count               []int
}

func (w *world) snapshot() shardTotals {
	t := shardTotals{
		load:   append([]float64(nil), w.load...),
		bytes:  append([]float64(nil), w.bytes...),
		writes: append([]float64(nil), w.writes...),
		count:  make([]int, len(w.names)),
	}
	for i := range w.units {
		t.count[w.units[i].shard]++
	}
	return t
}

// balanced: every active shard within the threshold and nothing left on a draining shard.
func (w *world) balanced() bool {
	for i := range w.units {
		if !w.active[w.units[i].shard] {
			return false
		}
	}
	if w.noStats {
		return true
	}
	for s := range w.names {
		if w.active[s] && (w.load[s] > w.upper+eps || w.load[s] < w.lower-eps) {
			return false
		}
	}
	return true
}

// maxMean is the largest shard load over the mean (loads are already in units of the mean).
func (w *world) maxMean() float64 {
	if w.noStats {
		return 0
	}
	m := 0.0
	for _, l := range w.load {
		m = math.Max(m, l)
	}
	return m
}

// lowerBound is the smallest max/mean any plan could reach: no shard is below the mean once
// every shard is even, a tenant cannot be split, and ranges that are frozen or in a
// migration stay on their shard.
func (w *world) lowerBound() float64 {
	if w.noStats {
		return 0
	}
	pinned := make([]float64, len(w.names))
	lb0 := 0.0
	for i := range w.units {
		u := &w.units[i]
		if u.single {
			lb0 = math.Max(lb0, u.load)
		}
		for _, h := range u.hots {
			lb0 = math.Max(lb0, h.load)
		}
		if u.pinned != "" {
			pinned[u.shard] += u.load
		}
	}
	// Loads are in units of the mean, so the active shards carry len(active) in all; what is
	// pinned on a draining shard stays off them.
	var total, stuck float64
	for s := range w.names {
		if w.active[s] {
			total++
		}
	}
	for s, p := range pinned {
		if !w.active[s] {
			stuck += p
		}
	}
	lb := math.Max(lb0, (total-stuck)/total)
	for _, p := range pinned {
		lb = math.Max(lb, p)
	}
	return lb
}

// bytesFloor estimates the bytes any plan must move: what takes shards above the threshold
// back to it (assuming a shard's bytes follow its load) and everything on draining shards.
func (w *world) bytesFloor() float64 {
	var f float64
	for s := range w.names {
		if !w.active[s] {
			f += w.bytes[s]
			continue
		}
		if !w.noStats && w.load[s] > w.upper && w.load[s] > 0 {
			f += (w.load[s] - w.upper) / w.load[s] * w.bytes[s]
		}
	}
	return f
}

// prune drops splits none of whose parts move: they would change nothing but the catalog.
func (w *world) prune() []bool {
	needed := make([]bool, len(w.units))
	for i := len(w.units) - 1; i >= 0; i-- {
		u := &w.units[i]
		if u.moved {
			needed[i] = true
		}
		if needed[i] && u.parent >= 0 {
			needed[u.parent] = true
		}
	}
	keep := make([]bool, len(w.splits))
	for i, sr := range w.splits {
		keep[i] = needed[sr.unit]
	}
	return keep
}

// rangesAfter counts the ranges per shard once the kept steps have run.
func (w *world) rangesAfter(nOrig int, keep []bool) []int {
	out := make([]int, len(w.names))
	stack := make([]int, 0, 16)
	for i := 0; i < nOrig; i++ {
		stack = append(stack[:0], i)
		for len(stack) > 0 {
			ui := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			u := &w.units[ui]
			if u.splitBy >= 0 && keep[u.splitBy] {
				stack = append(stack, w.splits[u.splitBy].parts...)
				continue
			}
			out[u.shard]++
		}
	}
	return out
}

// revLookup finds the mod revision the state recorded for a range: the store records it
// under catalog.RangeKey (relative to the cluster prefix); a full etcd key or a bare <lo16>
// is accepted too, so a state built by hand or by another tool still works.
type revLookup struct {
	state  *catalog.State
	suffix map[string]string // lo16 -> full key, built on first need
}

func newRevLookup(s *catalog.State) *revLookup { return &revLookup{state: s} }

func (rl *revLookup) lookup(lo int64) (string, int64) {
	hex := catalog.KeyHex(lo)
	m := rl.state.ModRev
	if k := catalog.RangeKey(lo); m[k] != 0 {
		return k, m[k]
	}
	if c := rl.state.Config.Cluster; c != "" {
		k := "/reshard/" + c + "/ranges/" + hex
		if rev, ok := m[k]; ok {
			return k, rev
		}
	}
	if rev, ok := m[hex]; ok {
		return hex, rev
	}
	if rl.suffix == nil {
		// The lowest full key wins if several clusters' keys are mixed in, so the choice
		// does not depend on map order.
		rl.suffix = map[string]string{}
		for k := range m {
			i := strings.LastIndex(k, "ranges/")
			if i < 0 || (i > 0 && k[i-1] != '/') || strings.HasSuffix(k[:i], "stats/") {
				continue
			}
			h := k[i+len("ranges/"):]
			if old, ok := rl.suffix[h]; !ok || k < old {
				rl.suffix[h] = k
			}
		}
	}
	if k, ok := rl.suffix[hex]; ok {
		return k, m[k]
	}
	return catalog.RangeKey(lo), 0
}

func r4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
func r2(x float64) float64 { return math.Round(x*100) / 100 }
