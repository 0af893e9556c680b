package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
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

// planStep is one journal write of a migration's life on demoMove's catalog, and whether
// its copy plan's pages are still there after it.
type planStep struct {
	name  string
	write func(ctx context.Context, s *Store, st *State, m *Migration) error
	kept  bool
}

func putPhase(phase, rollbackTo string, kept bool) planStep {
	return planStep{phase, func(ctx context.Context, s *Store, _ *State, m *Migration) error {
		m.Phase, m.RollbackTo = phase, rollbackTo
		return s.PutMigration(ctx, m)
	}, kept}
}

var (
	freezeStep = planStep{"freeze", func(ctx context.Context, s *Store, st *State, m *Migration) error {
		return s.Freeze(ctx, st, 0, m)
	}, true}
	flipStep = planStep{"flip", func(ctx context.Context, s *Store, st *State, m *Migration) error {
		return s.Flip(ctx, st, 0, m, "s3")
	}, true}
	unfreezeStep = planStep{"unfreeze", func(ctx context.Context, s *Store, st *State, m *Migration) error {
		m.Phase, m.RollbackTo = PhaseRollingBack, PhaseRolledBack
		return s.Unfreeze(ctx, st, 0, m)
	}, true}
)

// copiedMove is demoMove's migration with a copy of 1,000 chunks (10 pages) done, run twice,
// and its totals; it returns what GetMigration reads back.
func copiedMove(t *testing.T) (*Store, *clientv3.Client, *State, *Migration, *Migration) {
	t.Helper()
	s, cli, st, m := demoMove(t)
	m.Phase = PhaseCopying
	m.Copy = syntheticPlan(1_000)
	m.Copy.Runs, m.Copy.OverlapLSN = 2, "0/16B3748"
	m.Tables = map[string]TableProgress{"public.tenants": {Rows: 5_000, Bytes: 1 << 20, ChunksDone: 500, ChunksTotal: 500},
		"public.orders": {Rows: 5_000, Bytes: 3 << 20, ChunksDone: 500, ChunksTotal: 500}}
	m.RowsCopied, m.BytesCopied = 10_000, 4<<20
	if err := s.PutMigration(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return s, cli, st, m, readPlan(t, s, m.ID, m.Copy.Clone())
}

// pageKeys is how many keys are under copyplans/<id>/ (id "": under copyplans/).
func pageKeys(t *testing.T, s *Store, cli *clientv3.Client, id string) int64 {
	t.Helper()
	prefix := pfxCopyPlans
	if id != "" {
		prefix = copyPagesPrefix(id)
	}
	resp, err := cli.Get(context.Background(), s.key(prefix), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// checkSpentPlan checks that migration id keeps no page and that every read of it (the
// record, a listing, Load) still reports the totals of want: tables, rows, bytes, runs.
func checkSpentPlan(t *testing.T, s *Store, cli *clientv3.Client, want *Migration) {
	t.Helper()
	ctx := context.Background()
	if n := pageKeys(t, s, cli, want.ID); n != 0 {
		t.Fatalf("%d keys under copyplans/%s/ once the migration is %s, want none", n, want.ID, want.Phase)
	}
	got, err := s.GetMigration(ctx, want.ID)
	if err != nil {
		t.Fatalf("read the ended migration: %v", err)
	}
	list, err := s.ListMigrations(ctx)
	i := slices.IndexFunc(list, func(m Migration) bool { return m.ID == want.ID })
	if err != nil || i < 0 {
		t.Fatalf("list: %v, %d migrations without %s", err, len(list), want.ID)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spent := &CopyPlan{Runs: want.Copy.Runs, OverlapLSN: want.Copy.OverlapLSN}
	for _, ct := range want.Copy.Tables {
		spent.Tables = append(spent.Tables, CopyTable{Table: ct.Table})
	}
	loaded := st.Migrations[want.ID]
	for how, m := range map[string]*Migration{"GetMigration": got, "ListMigrations": &list[i], "Load": &loaded} {
		if m.Phase != want.Phase || !reflect.DeepEqual(m.Tables, want.Tables) || m.RowsCopied != want.RowsCopied ||
			m.BytesCopied != want.BytesCopied || !reflect.DeepEqual(m.Copy, spent) {
			t.Errorf("%s: %s, tables %v, %d rows, %d bytes, copy %+v; want %s, %v, %d, %d, %+v", how, m.Phase, m.Tables,
				m.RowsCopied, m.BytesCopied, m.Copy, want.Phase, want.Tables, want.RowsCopied, want.BytesCopied, spent)
		}
	}
}

// TestEndedMigrationKeepsNoCopyPlanPages: once a migration is cleaning up after its flip,
// done, rolled back or cancelled, nothing reads its copy plan again, and the write of its
// record deletes every page of it; the record still reports its totals. Before that (the
// copy, the catch-up, the window, the flip, a rollback under way) every page stays and the
// plan reads back exactly.
func TestEndedMigrationKeepsNoCopyPlanPages(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []planStep
	}{
		{"done", []planStep{putPhase(PhaseCatchingUp, "", true), freezeStep, putPhase(PhaseVerifying, "", true), flipStep,
			putPhase(PhaseCleaningUp, "", false), putPhase(PhaseDone, "", false)}},
		{"rolled back in the window", []planStep{freezeStep, unfreezeStep, putPhase(PhaseRolledBack, PhaseRolledBack, false)}},
		{"cancelled while copying", []planStep{putPhase(PhaseRollingBack, PhaseCancelled, true), putPhase(PhaseCancelled, PhaseCancelled, false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, cli, st, m, stored := copiedMove(t)
			for _, step := range tc.steps {
				if err := step.write(ctx, s, st, m); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				if !step.kept {
					checkSpentPlan(t, s, cli, m)
					continue
				}
				readPlan(t, s, m.ID, stored.Copy)
				if n := pageKeys(t, s, cli, m.ID); n != int64(len(pageRefs(rawRecord(t, s, cli, m.ID)))) {
					t.Fatalf("after %s: %d page keys, %d referenced", step.name, n, len(pageRefs(rawRecord(t, s, cli, m.ID))))
				}
			}
		})
	}
}

// rawRecord is migration id's record as stored (its plan as page references).
func rawRecord(t *testing.T, s *Store, cli *clientv3.Client, id string) *Migration {
	t.Helper()
	resp, err := cli.Get(context.Background(), s.key(MigrationKey(id)))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read the record of %s: %v", id, err)
	}
	m, err := decodeMigration(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPagesOfALostCompareAndSwapGoWhenTheMigrationEnds: a new plan too big for one
// transaction sends its pages ahead of the record; when the record's write then loses its
// compare (here the driver's lock, taken from it after its checks), they stay unreferenced
// under the migration's prefix, and the write that ends the migration deletes them with
// the rest.
func TestPagesOfALostCompareAndSwapGoWhenTheMigrationEnds(t *testing.T) {
	ctx := context.Background()
	s, cli, _, m, _ := copiedMove(t)
	l, err := s.TryLockMigration(ctx, m.ID, WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, l.Key()); err != nil {
		t.Fatal(err)
	}
	lost := *m
	lost.Copy = syntheticPlan(10_000) // 100 new pages: more than one transaction takes
	if err := s.PutMigration(ctx, &lost, HeldBy(l)); !errors.Is(err, ErrLockLost) {
		t.Fatalf("a write whose lock is gone: %v, want ErrLockLost", err)
	}
	refs := len(pageRefs(rawRecord(t, s, cli, m.ID)))
	if n := pageKeys(t, s, cli, m.ID); n <= int64(refs) {
		t.Fatalf("%d page keys, %d referenced: the lost write left none to collect", n, refs)
	}
	for _, phase := range []string{PhaseRollingBack, PhaseCancelled} {
		m.Phase, m.RollbackTo = phase, PhaseCancelled
		if err := s.PutMigration(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	checkSpentPlan(t, s, cli, m)
}
