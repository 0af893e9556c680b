package mover

import (
	"fmt"
	"strings"
	"testing"
)

func TestChunkCount(t *testing.T) {
	for _, tc := range []struct {
		est     int64
		workers int
		want    int
	}{
		{0, 4, 1},
		{1 << 20, 4, 1},
		{8 << 20, 4, 4},
		{100 << 20, 4, 8},
		{1 << 30, 4, 32},
		{1 << 40, 4, maxChunks},
	} {
		if got := chunkCount(tc.est, tc.workers); got != tc.want {
			t.Errorf("chunkCount(%d MB, %d) = %d, want %d", tc.est>>20, tc.workers, got, tc.want)
		}
	}
}

func TestBoundaries(t *testing.T) {
	keys := func(vals ...int) [][]string {
		var out [][]string
		for _, v := range vals {
			out = append(out, []string{"7", fmt.Sprint(v)})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		sample [][]string
		n      int
		want   string
	}{
		{"empty", nil, 4, "[]"},
		{"one chunk", keys(1, 2, 3), 1, "[]"},
		{"even", keys(1, 2, 3, 4, 5, 6, 7, 8), 4, "[[7 3] [7 5] [7 7]]"},
		{"duplicates collapse", keys(1, 1, 1, 1, 1, 1, 2, 2), 4, "[[7 2]]"},
		{"more chunks than keys", keys(1, 2), 8, "[[7 2]]"},
	} {
		if got := fmt.Sprint(boundaries(tc.sample, tc.n)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestChunkPredicate(t *testing.T) {
	tb := testTable()
	for _, tc := range []struct {
		lo, hi []string
		want   string
	}{
		{nil, nil, ""},
		{[]string{"5", "10"}, nil, `("tenant_id", "id") >= ('5'::bigint, '10'::bigint)`},
		{nil, []string{"5", "it's"}, `("tenant_id", "id") < ('5'::bigint, 'it''s'::bigint)`},
		{[]string{"1", "2"}, []string{"3", "4"}, `("tenant_id", "id") >= ('1'::bigint, '2'::bigint) AND ("tenant_id", "id") < ('3'::bigint, '4'::bigint)`},
	} {
		if got := (chunk{src: tb, lo: tc.lo, hi: tc.hi}).predicate(); got != tc.want {
			t.Errorf("predicate(%v, %v) = %s, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
	blocks := blockChunks(tb, tb, 3, 300)
	var preds []string
	for _, c := range blocks {
		preds = append(preds, c.predicate())
	}
	// An empty heap still gets one page per chunk.
	if got, want := strings.Join(preds, " | "), `ctid < '(1,0)'::tid | ctid >= '(1,0)'::tid AND ctid < '(2,0)'::tid | ctid >= '(2,0)'::tid`; got != want {
		t.Errorf("block chunks: %s, want %s", got, want)
	}
	single := &table{Schema: "public", Rel: "t", PK: []string{"id"}, Columns: []column{{Name: "id", Type: "uuid"}}}
	if got := (chunk{src: single, lo: []string{"x"}}).predicate(); got != `"id" >= 'x'::uuid` {
		t.Errorf("single-column predicate = %s", got)
	}
}
