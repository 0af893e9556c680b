package catalog

import (
	"fmt"
	"math"
	"testing"
)

// tiles returns n ranges of width 10 from 0 on shard s1 (the last one unbounded above), with
// [MinInt64, 0) in front when below is set.
func tiles(n int, below bool) []Range {
	var rs []Range
	if below {
		rs = append(rs, Range{Range: Below(0), Shard: "s1", State: RangeServing, Epoch: 1})
	}
	for i := range n {
		r := NewRange(int64(i*10), int64(i*10+10))
		if i == n-1 {
			r = From(int64(i * 10))
		}
		rs = append(rs, Range{Range: r, Shard: "s1", State: RangeServing, Epoch: 1})
	}
	return rs
}

// edit is one change of an index: put r at r.Range.Lo, or delete the range at lo.
type edit struct {
	r   Range
	lo  int64
	del bool
}

func put(lo, hi int64, shard string, epoch int64) edit {
	r := NewRange(lo, hi)
	if hi == math.MaxInt64 {
		r = From(lo)
	}
	return edit{r: Range{Range: r, Shard: shard, State: RangeServing, Epoch: epoch}, lo: lo}
}

func del(lo int64) edit { return edit{lo: lo, del: true} }

// splitAll cuts every range of [from, from+10*n) in two: 2n edits, all in few chunks.
func splitAll(from int64, n int) []edit {
	var out []edit
	for i := range int64(n) {
		lo := from + 10*i
		out = append(out, put(lo, lo+5, "s1", 2), put(lo+5, lo+10, "s1", 2))
	}
	return out
}

// TestRangeIndexEditsMatchAFlatList: whatever the edits, the index lists and finds exactly
// what a flat sorted list with the same edits (setRange, State.Owner) does, with each
// range's mod revision, and the index it was edited from stays as it was.
func TestRangeIndexEditsMatchAFlatList(t *testing.T) {
	for _, tc := range []struct {
		name  string
		base  []Range
		edits []edit
	}{
		{"empty index gets one range", nil, []edit{put(math.MinInt64, math.MaxInt64, "s1", 1)}},
		{"flip in place", tiles(3, true), []edit{put(0, 10, "s2", 2)}},
		{"split", tiles(3, true), []edit{put(0, 5, "s1", 2), put(5, 10, "s1", 2)}},
		{"merge", tiles(3, true), []edit{put(0, 20, "s1", 2), del(10)}},
		{"delete absent does nothing", tiles(3, true), []edit{del(7)}},
		{"delete every range of a chunk", tiles(3000, false), func() []edit {
			var out []edit
			for i := range int64(maxChunk / 2) {
				out = append(out, del(10*(maxChunk/2+i)))
			}
			return append(out, put(0, 10*maxChunk, "s2", 2))
		}()},
		{"inserts split a chunk, twice", tiles(3000, false), splitAll(0, maxChunk+10)},
		{"insert before the first range", tiles(5, false), []edit{put(math.MinInt64, 0, "s3", 1)}},
		{"flip the last range of a chunk and the first of the next", tiles(3000, true),
			[]edit{put(10*(maxChunk/2-2), 10*(maxChunk/2-1), "s2", 2), put(10*(maxChunk/2-1), 10*maxChunk/2, "s2", 2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			modRev := map[string]int64{}
			for _, r := range tc.base {
				modRev[RangeKey(r.Range.Lo)] = 1
			}
			base := newRangeIndex(tc.base, modRev)
			before := mustJSON(t, listIndex(base, nil))
			ref := append([]Range(nil), tc.base...)
			e := base.edit()
			for i, ed := range tc.edits {
				rev := int64(i + 2)
				e.set(ed.lo, ed.r, rev, ed.del)
				ref = setRange(ref, ed.lo, ed.r, ed.del)
				if ed.del {
					delete(modRev, RangeKey(ed.lo))
				} else {
					modRev[RangeKey(ed.lo)] = rev
				}
			}
			got := e.done()
			revs := map[string]int64{}
			if a, b := mustJSON(t, listIndex(got, revs)), mustJSON(t, ref); a != b {
				t.Fatalf("index lists\n%s\nwant\n%s", a, b)
			}
			if got.n != len(ref) {
				t.Fatalf("n = %d, want %d", got.n, len(ref))
			}
			if a, b := mustJSON(t, revs), mustJSON(t, modRev); a != b {
				t.Fatalf("mod revisions %s, want %s", a, b)
			}
			for _, c := range got.chunks {
				if len(c.rs) == 0 || len(c.rs) > maxChunk || len(c.rs) != len(c.revs) {
					t.Fatalf("a chunk of %d ranges and %d revisions", len(c.rs), len(c.revs))
				}
			}
			flat := &State{Ranges: ref}
			for _, k := range probes(ref) {
				w, wok := flat.Owner(k)
				g, gok := got.find(k)
				if g != w || gok != wok {
					t.Fatalf("find(%d) = %+v %v, want %+v %v", k, g, gok, w, wok)
				}
			}
			if after := mustJSON(t, listIndex(base, nil)); after != before {
				t.Fatal("editing changed the index it started from")
			}
		})
	}
}

// listIndex lists x's ranges and, into revs when given, their mod revisions.
func listIndex(x *rangeIndex, revs map[string]int64) []Range {
	return x.ranges(func(lo, rev int64) {
		if revs != nil {
			revs[RangeKey(lo)] = rev
		}
	})
}

// probes are keys at, just before and just after every bound of rs, and the two ends.
func probes(rs []Range) []int64 {
	out := []int64{math.MinInt64, math.MaxInt64, -1, 0, 1}
	for _, r := range rs {
		for _, k := range []int64{r.Range.Lo, r.Range.Hi} {
			if k > math.MinInt64 {
				out = append(out, k-1)
			}
			if k < math.MaxInt64 {
				out = append(out, k+1)
			}
			out = append(out, k)
		}
	}
	return out
}

// TestIndexBuilderChunksInOrder: a load's sink fills chunks half full, in order.
func TestIndexBuilderChunksInOrder(t *testing.T) {
	for _, n := range []int{0, 1, maxChunk / 2, maxChunk/2 + 1, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rs := tiles(max(n, 1), false)[:n]
			var b indexBuilder
			b.add(Range{Range: From(0)}, 9) // reset forgets it
			b.reset()
			for i, r := range rs {
				b.add(r, int64(i))
			}
			x := b.done()
			if want := (n + maxChunk/2 - 1) / (maxChunk / 2); len(x.chunks) != want || x.n != n {
				t.Fatalf("%d chunks, n %d; want %d, %d", len(x.chunks), x.n, want, n)
			}
			i := int64(0)
			if a, b := mustJSON(t, x.ranges(func(lo, rev int64) {
				if rev != i {
					t.Fatalf("range %d has mod revision %d", i, rev)
				}
				i++
			})), mustJSON(t, rs); a != b && n > 0 {
				t.Fatalf("lists %s", a)
			}
		})
	}
}
