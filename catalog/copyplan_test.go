package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// syntheticPlan is a copy plan of n key chunks over two tables, cut as the mover cuts a
// big tenant (bigint bounds as text, about 100 bytes each in the journal).
func syntheticPlan(n int) *CopyPlan {
	p := &CopyPlan{Runs: 1}
	for ti, name := range []string{"public.tenants", "public.orders"} {
		ct := CopyTable{Table: name}
		for i := range n / 2 {
			lo, hi := strconv.Itoa(1_000_000_000+i*10_000), strconv.Itoa(1_000_000_000+(i+1)*10_000)
			ct.Chunks = append(ct.Chunks, CopyChunk{Lo: []string{"42", lo}, Hi: []string{"42", hi}, Bytes: int64(ti*7 + i)})
		}
		p.Tables = append(p.Tables, ct)
	}
	return p
}

// TestCopyPlanOfFiftyThousandChunksIsJournalled: a migration record carries its copy plan,
// and a plan of 50,000 chunks (a 500M-row tenant at 10k rows a chunk; about 5 MB) is
// stored, read back exactly, updated chunk by chunk under the record's compare-and-swap,
// and survives a write of the record by someone who read it without its plan.
func TestCopyPlanOfFiftyThousandChunksIsJournalled(t *testing.T) {
	ctx := context.Background()
	s, cli := testStore(t)
	initDemo(t, s)
	m := &Migration{ID: "big", Kind: KindMove, Range: NewRange(0, 1000), Source: "s2", Target: "s3",
		Phase: PhaseCopying, Copy: syntheticPlan(50_000)}
	if err := s.PutMigration(ctx, m); err != nil {
		t.Fatalf("journal a plan of 50,000 chunks: %v", err)
	}
	want := m.Copy.Clone()
	got := readPlan(t, s, "big", want)

	// A chunk done: one chunk's record, under the record's compare-and-swap.
	stale := *got
	got.Copy = got.Copy.Clone()
	got.Copy.Tables[1].Chunks[12_345].Done, got.Copy.Tables[1].Chunks[12_345].Rows = true, 10_000
	if err := s.PutMigration(ctx, got); err != nil {
		t.Fatalf("record a chunk done: %v", err)
	}
	want = got.Copy.Clone()
	after := readPlan(t, s, "big", want)

	// A driver holding the record as it was before is refused, and changes nothing.
	stale.Copy = stale.Copy.Clone()
	stale.Copy.Tables[0].Chunks[0].Done = true
	if err := s.PutMigration(ctx, &stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("a stale write: %v, want ErrConflict", err)
	}
	readPlan(t, s, "big", want)

	// A record read from a listing (without its chunks) written back keeps the plan.
	list, err := s.ListMigrations(ctx)
	if err != nil || len(list) != 1 || list[0].ModRev != after.ModRev {
		t.Fatalf("list: %v, %d", err, len(list))
	}
	listed := list[0]
	listed.LastError = "noted"
	if err := s.PutMigration(ctx, &listed); err != nil {
		t.Fatal(err)
	}
	readPlan(t, s, "big", want)

	// Pages no record refers to any more are gone: the plan costs its own size only.
	resp, err := cli.Get(ctx, s.key(pfxCopyPlans), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := cli.Get(ctx, s.key(MigrationKey("big")))
	if err != nil {
		t.Fatal(err)
	}
	var raw Migration
	if err := json.Unmarshal(rec.Kvs[0].Value, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Copy == nil || len(resp.Kvs) != len(raw.Copy.Pages) || len(rec.Kvs[0].Value) > 64<<10 {
		t.Fatalf("%d page keys, a record of %d bytes", len(resp.Kvs), len(rec.Kvs[0].Value))
	}
}

// readPlan reads migration id with GetMigration and checks its plan is exactly want.
func readPlan(t *testing.T, s *Store, id string, want *CopyPlan) *Migration {
	t.Helper()
	m, err := s.GetMigration(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Copy, want) {
		n := 0
		if m.Copy != nil {
			for _, ct := range m.Copy.Tables {
				n += len(ct.Chunks)
			}
		}
		t.Fatalf("the plan read back differs from the one written (%d chunks read)", n)
	}
	return m
}

// TestCopyPlanPagesFollowEveryChange: a page is encoded again (a new hash) when any field
// of one of its chunks changes, and reused, not encoded again, when none did; the cache
// behind that compares every field of CopyChunk.
func TestCopyPlanPagesFollowEveryChange(t *testing.T) {
	if n := reflect.TypeOf(CopyChunk{}).NumField(); n != 9 {
		t.Fatalf("CopyChunk has %d fields: make equalChunks compare the new ones, then fix this count", n)
	}
	for _, tc := range []struct {
		name   string
		change func(c *CopyChunk)
	}{
		{"lo", func(c *CopyChunk) { c.Lo = []string{"42", "7"} }},
		{"hi", func(c *CopyChunk) { c.Hi = nil }},
		{"blocks", func(c *CopyChunk) { c.Blocks = true }},
		{"block_lo", func(c *CopyChunk) { c.BlockLo = 3 }},
		{"block_hi", func(c *CopyChunk) { c.BlockHi = -1 }},
		{"done", func(c *CopyChunk) { c.Done = true }},
		{"rows", func(c *CopyChunk) { c.Rows = 9 }},
		{"bytes", func(c *CopyChunk) { c.Bytes = 1 << 40 }},
		{"run", func(c *CopyChunk) { c.Run = 2 }},
		{"nothing", func(c *CopyChunk) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Store{}
			m := &Migration{ID: "m", Copy: syntheticPlan(400)}
			before, _, err := s.storedForm(m)
			if err != nil {
				t.Fatal(err)
			}
			m.Copy = m.Copy.Clone()
			tc.change(&m.Copy.Tables[1].Chunks[150])
			after, _, err := s.storedForm(m)
			if err != nil {
				t.Fatal(err)
			}
			var changed []int
			for i := range before.Copy.Pages {
				if before.Copy.Pages[i] != after.Copy.Pages[i] {
					changed = append(changed, i)
				}
			}
			want := []int{3} // table 1's second page
			if tc.name == "nothing" {
				want = nil
			}
			if !reflect.DeepEqual(changed, want) {
				t.Fatalf("pages changed: %v, want %v", changed, want)
			}
		})
	}
}
