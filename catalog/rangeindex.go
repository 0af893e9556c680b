package catalog

import "sort"

// rangeIndex is an immutable copy of a catalog's ranges, sorted by Lo, with the mod
// revision of each range's key: what a watching cache publishes on every watch response.
// The ranges are kept in chunks of at most maxChunk, so a change copies the chunks it
// touches and the table of chunks (tens of kilobytes at a million ranges) instead of the
// whole list (tens of megabytes); everything else is shared with the previous index, which
// readers may still hold.
type rangeIndex struct {
	chunks []*rangeChunk
	n      int
}

type rangeChunk struct {
	rs   []Range
	revs []int64 // revs[i]: the mod revision of rs[i]'s key
}

const maxChunk = 1024

// newRangeIndex indexes sorted ranges; modRev gives their keys' mod revisions.
func newRangeIndex(rs []Range, modRev map[string]int64) *rangeIndex {
	var b indexBuilder
	for _, r := range rs {
		b.add(r, modRev[RangeKey(r.Range.Lo)])
	}
	return b.done()
}

// indexBuilder builds an index from ranges given in order (a load's rangeSink). Chunks
// start half full, so the first edits of a chunk do not split it at once.
type indexBuilder struct{ x rangeIndex }

func (b *indexBuilder) add(r Range, modRev int64) {
	if len(b.x.chunks) == 0 || len(b.x.chunks[len(b.x.chunks)-1].rs) == maxChunk/2 {
		b.x.chunks = append(b.x.chunks, &rangeChunk{rs: make([]Range, 0, maxChunk/2), revs: make([]int64, 0, maxChunk/2)})
	}
	c := b.x.chunks[len(b.x.chunks)-1]
	c.rs, c.revs = append(c.rs, r), append(c.revs, modRev)
	b.x.n++
}

func (b *indexBuilder) reset() { b.x = rangeIndex{} }

func (b *indexBuilder) done() *rangeIndex { x := b.x; return &x }

// chunkOf is the index of the chunk that holds, or would hold, the range starting at lo:
// the last chunk whose first range starts at or before lo (the first chunk if none does).
func (x *rangeIndex) chunkOf(lo int64) int {
	i := sort.Search(len(x.chunks), func(i int) bool { return x.chunks[i].rs[0].Range.Lo > lo })
	return max(i-1, 0)
}

// find returns the range holding key.
func (x *rangeIndex) find(key int64) (Range, bool) {
	if x.n == 0 {
		return Range{}, false
	}
	c := x.chunks[x.chunkOf(key)]
	i := sort.Search(len(c.rs), func(i int) bool { return c.rs[i].Range.Lo > key })
	if i == 0 {
		return Range{}, false
	}
	r := c.rs[i-1]
	return r, r.Range.Contains(key)
}

// ranges returns every range in order, and calls rev for each with its key's mod revision.
func (x *rangeIndex) ranges(rev func(lo, modRev int64)) []Range {
	out := make([]Range, 0, x.n)
	for _, c := range x.chunks {
		out = append(out, c.rs...)
		for i, r := range c.rs {
			rev(r.Range.Lo, c.revs[i])
		}
	}
	return out
}

// indexEdit makes a new index from base: the chunk table is copied once, and each chunk
// the first time it is changed; base is never modified.
type indexEdit struct {
	x     *rangeIndex
	owned map[*rangeChunk]bool
}

func (x *rangeIndex) edit() *indexEdit {
	return &indexEdit{x: &rangeIndex{chunks: append([]*rangeChunk(nil), x.chunks...), n: x.n}, owned: map[*rangeChunk]bool{}}
}

// set puts (or with del, removes) the range starting at lo.
func (e *indexEdit) set(lo int64, r Range, modRev int64, del bool) {
	x := e.x
	if len(x.chunks) == 0 {
		if !del {
			c := &rangeChunk{rs: []Range{r}, revs: []int64{modRev}}
			e.owned[c] = true
			x.chunks, x.n = []*rangeChunk{c}, 1
		}
		return
	}
	ci := x.chunkOf(lo)
	c := x.chunks[ci]
	i := sort.Search(len(c.rs), func(i int) bool { return c.rs[i].Range.Lo >= lo })
	found := i < len(c.rs) && c.rs[i].Range.Lo == lo
	if del && !found {
		return
	}
	if !e.owned[c] {
		c = &rangeChunk{rs: append([]Range(nil), c.rs...), revs: append([]int64(nil), c.revs...)}
		e.owned[c] = true
		x.chunks[ci] = c
	}
	switch {
	case del:
		c.rs = setRange(c.rs, lo, r, true)
		c.revs = append(c.revs[:i], c.revs[i+1:]...)
		x.n--
	case found:
		c.rs[i], c.revs[i] = r, modRev
	default:
		c.rs = setRange(c.rs, lo, r, false)
		c.revs = append(c.revs, 0)
		copy(c.revs[i+1:], c.revs[i:])
		c.revs[i] = modRev
		x.n++
	}
	switch {
	case len(c.rs) == 0:
		x.chunks = append(x.chunks[:ci], x.chunks[ci+1:]...)
	case len(c.rs) > maxChunk:
		half := len(c.rs) / 2
		right := &rangeChunk{rs: append([]Range(nil), c.rs[half:]...), revs: append([]int64(nil), c.revs[half:]...)}
		c.rs, c.revs = c.rs[:half:half], c.revs[:half:half]
		e.owned[right] = true
		x.chunks = append(x.chunks, nil)
		copy(x.chunks[ci+2:], x.chunks[ci+1:])
		x.chunks[ci+1] = right
	}
}

func (e *indexEdit) done() *rangeIndex { return e.x }
