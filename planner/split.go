package planner

import (
	"fmt"
	"math"
	"sort"

	"github.com/reshard/reshard/catalog"
)

// splitRec is a planned split of one unit into parts.
type splitRec struct {
	unit    int
	at      []int64
	parts   []int
	isolate *hotKey // the tenant given its own range, nil for a cut at the median
	reason  string
}

// nearlyAll reports whether a part of load part is, for balancing, the whole of load whole.
func nearlyAll(part, whole float64) bool { return part >= whole*(1-1e-9) }

// bestCut returns the cut key x (Lo < x <= last key) whose estimated load below x is
// closest to target, the smaller x on a tie. Without a known position for the cold rest,
// only the boundaries of hot tenants are cut points.
func (u *unit) bestCut(target float64) (int64, float64, bool) {
	lo, last := u.r.Lo, lastKey(u.r)
	if u.single || lo == last {
		return 0, 0, false
	}
	first := lo + 1
	var cands []int64
	if u.placeable {
		a, b := first, last
		for a < b {
			m := int64(uint64(a) + (uint64(b)-uint64(a))/2)
			if u.loadBelow(m) >= target {
				b = m
			} else {
				a = m + 1
			}
		}
		cands = append(cands, a)
		if a > first {
			cands = append(cands, a-1)
		}
	} else {
		for _, h := range u.hots {
			if h.key >= first && h.key <= last {
				cands = append(cands, h.key)
			}
			if h.key < last && h.key+1 >= first {
				cands = append(cands, h.key+1)
			}
		}
	}
	if len(cands) == 0 {
		return 0, 0, false
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i] < cands[j] })
	best, bestF, bestD := int64(0), 0.0, math.Inf(1)
	for _, x := range cands {
		f := u.loadBelow(x)
		if d := math.Abs(f - target); d < bestD {
			best, bestF, bestD = x, f, d
		}
	}
	return best, bestF, true
}

// partLoads are the estimated loads of the parts a cut at keys at would give.
func (u *unit) partLoads(at []int64) []float64 {
	out := make([]float64, 0, len(at)+1)
	prev := 0.0
	for _, x := range at {
		f := u.loadBelow(x)
		out = append(out, f-prev)
		prev = f
	}
	return append(out, u.load-prev)
}

// cut replaces unit ui by its parts at keys at (ascending, inside the range) and records the
// split. The parts stay on the unit's shard.
func (w *world) cut(ui int, at []int64, isolate *hotKey, reason string) []int {
	parent := w.units[ui] // a copy: appending below may move the slice
	bounds := make([]float64, 0, len(at)+2)
	bounds = append(bounds, float64(parent.r.Lo))
	for _, x := range at {
		bounds = append(bounds, float64(x))
	}
	bounds = append(bounds, endF(parent.r))
	g := func(i int) float64 {
		switch i {
		case 0:
			return 0
		case len(bounds) - 1:
			return 1
		}
		return parent.fracBelow(bounds[i])
	}

	rest := parent.r
	parts := make([]int, 0, len(at)+1)
	rec := len(w.splits)
	for i := 0; i <= len(at); i++ {
		r := rest
		if i < len(at) {
			l, right, err := rest.Split(at[i])
			if err != nil {
				panic(fmt.Sprintf("planner: bad cut %v of %s: %v", at, parent.r, err)) // callers only pass interior keys
			}
			r, rest = l, right
		}
		p := unit{
			r: r, home: parent.home, shard: parent.shard, origin: parent.origin,
			parent: ui, splitBy: -1,
			single: !r.HiInf && r.Hi-r.Lo == 1,
		}
		for _, h := range parent.hots {
			if r.Contains(h.key) {
				p.hots = append(p.hots, h)
				p.bytes += h.bytes
				p.writes += h.writes
			}
		}
		share := g(i+1) - g(i)
		p.coldBytes = parent.coldBytes * share
		p.coldWrites = parent.coldWrites * share
		p.bytes += p.coldBytes
		p.writes += p.coldWrites
		if parent.placeable {
			p.spanLo = math.Max(parent.spanLo, float64(r.Lo))
			p.spanHi = math.Min(parent.spanHi, endF(r))
			p.placeable = p.spanHi > p.spanLo
		}
		w.finishUnit(&p)
		w.units = append(w.units, p)
		parts = append(parts, len(w.units)-1)
	}
	// Shard totals: swap the parent's estimate for the parts' so the sum stays exact.
	s := parent.shard
	w.load[s] -= parent.load
	w.bytes[s] -= parent.bytes
	w.writes[s] -= parent.writes
	for _, pi := range parts {
		p := &w.units[pi]
		w.load[s] += p.load
		w.bytes[s] += p.bytes
		w.writes[s] += p.writes
	}
	if w.count != nil {
		w.count[s] += len(parts) - 1
	}
	w.units[ui].splitBy = rec
	w.splits = append(w.splits, splitRec{unit: ui, at: append([]int64(nil), at...), parts: parts, isolate: isolate, reason: reason})
	return parts
}

// splitOversized splits every range that alone carries more than MaxRangeLoad, part by part,
// until each part fits or cannot be cut further: around a hot tenant that is heavy enough
// (isolate), else at the load-weighted median.
func (w *world) splitOversized() {
	limit := w.opts.MaxRangeLoad
	var queue []int
	for i := range w.units {
		if w.units[i].load > limit {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		ui := queue[0]
		queue = queue[1:]
		u := &w.units[ui]
		if u.pinned != "" {
			w.notef("%s and carries %.2fx the mean load: it stays where it is; re-plan once it is serving", u.pinned, u.load)
			continue
		}
		if u.single {
			continue // one tenant: the lower bound reports it
		}
		parts := w.isolateOrHalve(ui)
		if parts == nil {
			u := &w.units[ui]
			w.notef("range %s carries %.2fx the mean load but the stats do not say where inside it the load sits: run `reshard stats collect` (hot tenants give cut points) or split it by hand with `reshard split`", u.r, u.load)
			continue
		}
		for _, pi := range parts {
			if w.units[pi].load > limit {
				queue = append(queue, pi)
			}
		}
	}
}

// isolateOrHalve cuts an oversized unit once; nil when no cut helps.
func (w *world) isolateOrHalve(ui int) []int {
	u := &w.units[ui]
	L := u.load
	if h, ok := u.heaviestHot(); ok && w.opts.IsolateHotKeys && h.load > 0 && (h.load >= w.opts.HotKeyLoad || h.load >= L/2) {
		var at []int64
		if h.key > u.r.Lo {
			at = append(at, h.key)
		}
		if h.key < lastKey(u.r) {
			at = append(at, h.key+1)
		}
		if len(at) > 0 {
			loads := u.partLoads(at)
			if !nearlyAll(maxOf(loads), L) {
				reason := fmt.Sprintf("tenant %s alone carries %.2fx the mean load (%.0f%% of range %s at %.2fx): give it its own range so it can move alone",
					catalog.TenantName(h.key, h.tenant), h.load, 100*h.load/L, u.r, L)
				return w.cut(ui, at, &h, reason)
			}
		}
	}
	x, f, ok := u.bestCut(L / 2)
	if !ok || f <= 0 || nearlyAll(f, L) {
		return nil
	}
	reason := fmt.Sprintf("range %s carries %.2fx the mean load, more than one shard should hold: cut at the load-weighted median %d (%.2fx | %.2fx)",
		u.r, L, x, f, L-f)
	return w.cut(ui, []int64{x}, nil, reason)
}

func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}
