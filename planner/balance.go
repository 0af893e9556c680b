package planner

import (
	"fmt"
	"math"
	"sort"
)

const (
	eps = 1e-9
	// minMove is the smallest load worth a move (0.01% of a shard), minCut the smallest
	// ideal worth a split to carve it (0.5%): below them the data churn buys nothing.
	minMove = 1e-4
	minCut  = 5e-3
)

// moveRec is a planned move of one unit.
type moveRec struct {
	unit   int
	from   int
	to     int
	drain  bool
	reason string
}

// shardHeap is a binary heap of shard indices that can re-sift or drop any member, so a
// move costs O(log shards) instead of a scan.
type shardHeap struct {
	items []int
	pos   []int // position of each shard in items, -1 when absent
	less  func(a, b int) bool
}

func newShardHeap(n int, less func(a, b int) bool) *shardHeap {
	h := &shardHeap{pos: make([]int, n), less: less}
	for i := range h.pos {
		h.pos[i] = -1
	}
	return h
}

func (h *shardHeap) len() int { return len(h.items) }
func (h *shardHeap) top() int { return h.items[0] }

func (h *shardHeap) push(s int) {
	h.items = append(h.items, s)
	h.pos[s] = len(h.items) - 1
	h.up(len(h.items) - 1)
}

func (h *shardHeap) remove(s int) {
	i := h.pos[s]
	if i < 0 {
		return
	}
	last := len(h.items) - 1
	h.swap(i, last)
	h.items = h.items[:last]
	h.pos[s] = -1
	if i < last {
		h.fix(h.items[i])
	}
}

func (h *shardHeap) fix(s int) {
	if i := h.pos[s]; i >= 0 {
		h.up(i)
		h.down(h.pos[s])
	}
}

func (h *shardHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i]] = i
	h.pos[h.items[j]] = j
}

func (h *shardHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *shardHeap) down(i int) {
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(h.items[r], h.items[l]) {
			m = r
		}
		if !h.less(h.items[m], h.items[i]) {
			return
		}
		h.swap(i, m)
		i = m
	}
}

// leastLoaded orders shards by load, then by fewer ranges (so zero-load ranges of a drained
// shard spread out), then by name.
func (w *world) leastLoaded(a, b int) bool {
	if w.load[a] != w.load[b] {
		return w.load[a] < w.load[b]
	}
	if w.count[a] != w.count[b] {
		return w.count[a] < w.count[b]
	}
	return a < b
}

func (w *world) mostLoaded(a, b int) bool {
	if w.load[a] != w.load[b] {
		return w.load[a] > w.load[b]
	}
	return a < b
}

func (w *world) movesLeft() bool { return w.opts.MaxMoves == 0 || len(w.moves) < w.opts.MaxMoves }

func (w *world) bytesFit(b float64) bool {
	return w.opts.MaxBytes == 0 || w.movedBytes+b <= float64(w.opts.MaxBytes)+0.5
}

// move reassigns a unit; reason is written by the caller from the loads before the move.
func (w *world) move(ui, to int, drain bool, reason string) {
	u := &w.units[ui]
	from := u.shard
	w.load[from] -= u.load
	w.bytes[from] -= u.bytes
	w.writes[from] -= u.writes
	w.count[from]--
	w.load[to] += u.load
	w.bytes[to] += u.bytes
	w.writes[to] += u.writes
	w.count[to]++
	u.shard = to
	u.moved = true
	w.movedBytes += u.bytes
	w.moves = append(w.moves, moveRec{unit: ui, from: from, to: to, drain: drain, reason: reason})
}

// countUnits sets the number of whole units per shard.
func (w *world) countUnits() {
	w.count = make([]int, len(w.names))
	for i := range w.units {
		if w.units[i].splitBy < 0 {
			w.count[w.units[i].shard]++
		}
	}
}

// drain moves every range off draining shards, the largest first, each to the least loaded
// active shard at that moment (longest-processing-time first keeps the targets even).
func (w *world) drain() {
	var list []int
	for i := range w.units {
		u := &w.units[i]
		if u.splitBy >= 0 || w.active[u.shard] {
			continue
		}
		if u.pinned != "" {
			w.notef("%s: it stays on draining shard %s; re-plan once it is serving", u.pinned, w.names[u.shard])
			continue
		}
		list = append(list, i)
	}
	if len(list) == 0 {
		return
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := &w.units[list[i]], &w.units[list[j]]
		if a.load != b.load {
			return a.load > b.load
		}
		if a.bytes != b.bytes {
			return a.bytes > b.bytes
		}
		return a.r.Lo < b.r.Lo
	})
	h := newShardHeap(len(w.names), w.leastLoaded)
	for s := range w.names {
		if w.active[s] {
			h.push(s)
		}
	}
	left := map[int]int{}
	for _, ui := range list {
		u := &w.units[ui]
		if !w.movesLeft() || !w.bytesFit(u.bytes) {
			left[u.shard]++
			continue
		}
		t := h.top()
		from := u.shard
		reason := fmt.Sprintf("%s is draining: %s is the least loaded active shard (%.2fx -> %.2fx of the mean)",
			w.names[from], w.names[t], w.load[t], w.load[t]+u.load)
		w.move(ui, t, true, reason)
		h.fix(t)
	}
	for s := range w.names {
		if n := left[s]; n > 0 {
			w.notef("drain of %s is incomplete: %d range(s) stay because of --max-moves/--max-bytes; raise them or apply this plan and re-plan", w.names[s], n)
		}
	}
}

// candidates holds, per active shard, the units that may still move, sorted by load, then
// bytes (fewer first), then key.
type candidates struct {
	w    *world
	list [][]int
}

func (c *candidates) less(a, b int) bool {
	ua, ub := &c.w.units[a], &c.w.units[b]
	if ua.load != ub.load {
		return ua.load < ub.load
	}
	if ua.bytes != ub.bytes {
		return ua.bytes < ub.bytes
	}
	return ua.r.Lo < ub.r.Lo
}

func (c *candidates) insert(s, ui int) {
	l := c.list[s]
	i := sort.Search(len(l), func(i int) bool { return !c.less(l[i], ui) })
	l = append(l, 0)
	copy(l[i+1:], l[i:])
	l[i] = ui
	c.list[s] = l
}

func (c *candidates) remove(s, ui int) {
	l := c.list[s]
	i := sort.Search(len(l), func(i int) bool { return !c.less(l[i], ui) })
	if i < len(l) && l[i] == ui {
		c.list[s] = append(l[:i], l[i+1:]...)
	}
}

func (w *world) movable(u *unit) bool {
	return u.splitBy < 0 && !u.moved && u.pinned == "" && u.load > 0 && w.active[u.shard]
}

// option is one way to take load off a source shard: a whole unit, or a piece cut off one.
type option struct {
	unit  int
	load  float64
	bytes float64
	lo    int64
	cut   bool
	at    int64
	left  bool // the piece below at moves (else the one from at up)
}

// better orders options by closeness to the ideal load, then fewer bytes, then key.
func better(a, b option, ideal float64) bool {
	da, db := math.Abs(a.load-ideal), math.Abs(b.load-ideal)
	if da != db {
		return da < db
	}
	if a.bytes != b.bytes {
		return a.bytes < b.bytes
	}
	return a.lo < b.lo
}

// rebalance moves load from the most to the least loaded active shard while a shard is
// outside the threshold. Each move aims at an ideal amount: the source down to the mean
// without lifting the target above it (or the target up to the mean without taking the
// source below it); a range close to that amount moves, or, when none is close, a piece of
// the right size is cut off a larger range first.
func (w *world) rebalance() {
	c := &candidates{w: w, list: make([][]int, len(w.names))}
	for i := range w.units {
		if u := &w.units[i]; w.movable(u) {
			c.list[u.shard] = append(c.list[u.shard], i)
		}
	}
	for s := range c.list {
		l := c.list[s]
		sort.Slice(l, func(i, j int) bool { return c.less(l[i], l[j]) })
	}
	minH := newShardHeap(len(w.names), w.leastLoaded)
	maxH := newShardHeap(len(w.names), w.mostLoaded)
	for s := range w.names {
		if w.active[s] {
			minH.push(s)
			maxH.push(s)
		}
	}
	budgetStuck := false
	maxIter := 10*len(w.units) + 100000
	for iter := 0; iter < maxIter && maxH.len() > 0; iter++ {
		s, t := maxH.top(), minH.top()
		a, b := w.load[s], w.load[t]
		if s == t || a <= b+eps || (a <= w.upper+eps && b >= w.lower-eps) {
			break
		}
		if !w.movesLeft() {
			w.notef("stopped at --max-moves %d with shards still outside the threshold: raise it, or apply this plan and re-plan", w.opts.MaxMoves)
			break
		}
		ideal := w.idealMove(a, b)
		opt, ok, budget := w.pick(c, s, a, b, ideal)
		if !ok {
			budgetStuck = budgetStuck || budget
			maxH.remove(s) // the target's load only grows, so s stays stuck
			continue
		}
		ui := opt.unit
		c.remove(s, ui)
		if opt.cut {
			u := &w.units[ui]
			reason := fmt.Sprintf("cut %.2fx of load off range %s (%.2fx) so that only what %s should shed moves",
				opt.load, u.r, u.load, w.names[s])
			parts := w.cut(ui, []int64{opt.at}, nil, reason)
			stay := parts[0]
			ui = parts[1]
			if opt.left {
				stay, ui = parts[1], parts[0]
			}
			if w.movable(&w.units[stay]) {
				c.insert(s, stay)
			}
		}
		wl := w.units[ui].load
		reason := fmt.Sprintf("%s is at %.2fx the mean and %s at %.2fx: moving %.2fx brings them to %.2fx and %.2fx",
			w.names[s], a, w.names[t], b, wl, a-wl, b+wl)
		w.move(ui, t, false, reason)
		maxH.fix(s)
		minH.fix(s)
		maxH.fix(t)
		minH.fix(t)
	}
	if budgetStuck {
		w.notef("--max-bytes %d left shards outside the threshold: raise it, or apply this plan and re-plan", w.opts.MaxBytes)
	}
}

// idealMove is the load to move from a source at a to a target at b.
func (w *world) idealMove(a, b float64) float64 {
	half := (a - b) / 2
	if a > w.upper {
		x := math.Min(half, a-1)
		if b < 1 {
			return math.Min(x, 1-b)
		}
		return math.Min(x, math.Max(w.upper-b, 0))
	}
	x := math.Min(half, 1-b)
	if a > 1 {
		return math.Min(x, a-1)
	}
	return math.Min(x, math.Max(a-w.lower, 0))
}

// pick chooses what leaves source s for target t. ok is false when nothing qualifies;
// budget then says whether --max-bytes was the reason.
func (w *world) pick(c *candidates, s int, a, b, ideal float64) (option, bool, bool) {
	inBand := a <= w.upper+eps
	gainOK := func(l float64) bool {
		gain := a - math.Max(a-l, b+l)
		if l < minMove || gain <= eps || gain < w.opts.ImprovementThreshold*l-eps {
			return false
		}
		// A source within the threshold only fills a hole: it must not end up below its
		// target, or the hole just moves and the next move chases it.
		return !inBand || b+l <= a-l+eps
	}
	l := c.list[s]
	idx := sort.Search(len(l), func(i int) bool { return w.units[l[i]].load > ideal })
	var best option
	found, budget := false, false
	consider := func(o option) {
		if !gainOK(o.load) {
			return
		}
		if !w.bytesFit(o.bytes) {
			budget = true
			return
		}
		if !found || better(o, best, ideal) {
			best, found = o, true
		}
	}
	whole := func(i int) option {
		u := &w.units[l[i]]
		return option{unit: l[i], load: u.load, bytes: u.bytes, lo: u.r.Lo}
	}
	// The largest unit not above the ideal (the first of its load: fewest bytes), and the
	// smallest above it. Under a byte cap, walk on to the nearest that fits.
	for i := idx - 1; i >= 0; i-- {
		if w.units[l[i]].load <= 0 {
			break
		}
		j := i
		for j > 0 && w.units[l[j-1]].load == w.units[l[i]].load {
			j--
		}
		o := whole(j)
		if w.bytesFit(o.bytes) {
			consider(o)
			break
		}
		budget = true
		if w.opts.MaxBytes == 0 {
			break
		}
		i = j
	}
	for i := idx; i < len(l); i++ {
		o := whole(i)
		if w.bytesFit(o.bytes) || w.opts.MaxBytes == 0 {
			consider(o)
			break
		}
		budget = true
	}
	// Cut a piece of the ideal size off a larger unit when no whole unit comes within half
	// of the ideal or the best one would lift the target over the threshold: one split and
	// one move instead of many small moves, a move of far more than needed, or none.
	if ideal >= minCut && (!found || math.Abs(best.load-ideal) > ideal/2 || b+best.load > w.upper+eps) {
		tries := 0
		for i := idx; i < len(l) && tries < 4; i++ {
			u := &w.units[l[i]]
			if u.single {
				continue
			}
			tries++
			o, ok := w.carve(l[i], ideal)
			if ok && gainOK(o.load) && w.bytesFit(o.bytes) && (!found || better(o, best, ideal)) {
				best, found = o, true
				break
			}
		}
	}
	return best, found, budget && !found
}

// carve finds the cut of unit ui that leaves a piece at one end closest to load target.
func (w *world) carve(ui int, target float64) (option, bool) {
	u := &w.units[ui]
	L := u.load
	var best option
	found := false
	try := func(x int64, piece float64, left bool) {
		if piece < minCut/2 || nearlyAll(piece, L) {
			return
		}
		o := option{unit: ui, load: piece, cut: true, at: x, left: left, lo: u.r.Lo}
		bb := u.bytesBelow(x)
		o.bytes = bb
		if !left {
			o.bytes = u.bytes - bb
			o.lo = x
		}
		if !found || better(o, best, target) {
			best, found = o, true
		}
	}
	if x, f, ok := u.bestCut(target); ok {
		try(x, f, true)
	}
	if x, f, ok := u.bestCut(L - target); ok {
		try(x, L-f, false)
	}
	return best, found
}

// bytesBelow is the estimated bytes of u's keys below the cut x.
func (u *unit) bytesBelow(x int64) float64 {
	var hb float64
	for _, h := range u.hots {
		if h.key >= x {
			break
		}
		hb += h.bytes
	}
	return hb + u.coldBytes*u.fracBelow(float64(x))
}
