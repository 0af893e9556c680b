package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A migration's copy plan is stored beside its record, not in it: a plan has about 100
// bytes a chunk, so a tenant of 15,000 chunks (150M rows at 10k rows a chunk) would make
// the record larger than one etcd request may be, and the move could not even start.
//
// The record keeps the plan's other fields and, per table, the list of its pages (at most
// chunksPerPage chunks each) by the hash of their content; a page is the key
// copyplans/<migration>/<hash>, written once and never changed. A write of the record
// writes only the pages it references that the stored record does not, in the same
// transaction when they fit (a chunk done: one page), otherwise before it (a new plan):
// unreferenced until the record's compare-and-swap commits, so a failed write leaves the
// journal as it was. Pages the new record no longer references go in the same
// transaction, or after it. GetMigration reads the record and its pages at one revision.
// Listings (ListMigrations, Load, the watch) carry Pages and no chunks, and a record
// written back from one keeps the stored plan.
//
// Once nothing can read the plan again (copySpent), the write of the record deletes the
// migration's whole prefix in its own transaction, pages a lost write left included, and
// the record keeps the plan's tables, runs and overlap without chunks or pages.

const (
	pfxCopyPlans  = "copyplans/"
	chunksPerPage = 100
)

func copyPageKey(id, hash string) string { return pfxCopyPlans + id + "/" + hash }

func copyPagesPrefix(id string) string { return pfxCopyPlans + id + "/" }

// copySpent reports a phase from which nothing reads the copy plan again: the copy
// resumes only in copying and the catch-up reads the overlap until the flip; the cleanup
// after the flip and the ends of a rollback are final. The flip itself and the start of a
// rollback keep the plan: they can be inside a cutover window, where every etcd
// operation counts, and the next write (cleaning_up, rolled_back or cancelled) collects it.
func copySpent(phase string) bool {
	switch phase {
	case PhaseCleaningUp, PhaseDone, PhaseRolledBack, PhaseCancelled:
		return true
	}
	return false
}

// spent is what a record keeps of its plan once nothing reads it: no chunks, no pages.
func (p *CopyPlan) spent() *CopyPlan {
	if p == nil {
		return nil
	}
	c := &CopyPlan{Runs: p.Runs, OverlapLSN: p.OverlapLSN}
	for _, t := range p.Tables {
		c.Tables = append(c.Tables, CopyTable{Table: t.Table})
	}
	return c
}

// unread reports a plan read by a listing: pages, no chunks.
func (p *CopyPlan) unread() bool {
	if p == nil || len(p.Pages) == 0 {
		return false
	}
	for _, t := range p.Tables {
		if len(t.Chunks) > 0 {
			return false
		}
	}
	return true
}

// storedForm is m as its record is stored (the plan's chunks replaced by page
// references) and the content of those pages by hash.
func (s *Store) storedForm(m *Migration) (*Migration, map[string][]byte, error) {
	if m.Copy == nil || m.Copy.unread() {
		return m, nil, nil
	}
	sm := *m
	p := *m.Copy
	p.Pages = nil
	p.Tables = make([]CopyTable, len(m.Copy.Tables))
	pages := map[string][]byte{}
	for ti, t := range m.Copy.Tables {
		p.Tables[ti] = CopyTable{Table: t.Table}
		for i := 0; i < len(t.Chunks); i += chunksPerPage {
			pg, err := s.plans.page(m.ID, ti, i/chunksPerPage, t.Chunks[i:min(i+chunksPerPage, len(t.Chunks))])
			if err != nil {
				return nil, nil, fmt.Errorf("encode the copy plan of migration %s: %w", m.ID, err)
			}
			pages[pg.hash] = pg.body
			p.Pages = append(p.Pages, CopyPage{Table: ti, Hash: pg.hash})
		}
	}
	sm.Copy = &p
	return &sm, pages, nil
}

// pageCache keeps the pages of the last plan written per migration: a chunk done changes
// one page of hundreds, and comparing a page's chunks costs far less than encoding and
// hashing it again (80 ms a write for a plan of 50,000 chunks without it).
type pageCache struct {
	mu    sync.Mutex
	plans map[string]map[[2]int]*cachedPage // migration -> (table, page) -> page
}

type cachedPage struct {
	chunks []CopyChunk // a deep copy of what body encodes
	hash   string
	body   []byte
}

// maxCachedPlans bounds the cache: a driver writes one migration at a time, a few at most.
const maxCachedPlans = 8

// page is the encoded page of chunks, from the cache when it holds these very chunks.
func (c *pageCache) page(id string, table, index int, chunks []CopyChunk) (*cachedPage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := [2]int{table, index}
	if pg := c.plans[id][key]; pg != nil && equalChunks(pg.chunks, chunks) {
		return pg, nil
	}
	b, err := json.Marshal(chunks)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	pg := &cachedPage{chunks: cloneChunks(chunks), hash: hex.EncodeToString(sum[:16]), body: b}
	if c.plans == nil {
		c.plans = map[string]map[[2]int]*cachedPage{}
	}
	if c.plans[id] == nil {
		if len(c.plans) >= maxCachedPlans {
			clear(c.plans)
		}
		c.plans[id] = map[[2]int]*cachedPage{}
	}
	c.plans[id][key] = pg
	return pg, nil
}

// forget drops the cached pages of migration id, whose plan is spent.
func (c *pageCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.plans, id)
}

func equalChunks(a, b []CopyChunk) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		// nil and empty bounds encode differently (null, []), so they differ here too.
		if !slices.Equal(x.Lo, y.Lo) || !slices.Equal(x.Hi, y.Hi) || (x.Lo == nil) != (y.Lo == nil) || (x.Hi == nil) != (y.Hi == nil) {
			return false
		}
		if x.Blocks != y.Blocks || x.BlockLo != y.BlockLo || x.BlockHi != y.BlockHi || x.Done != y.Done ||
			x.Rows != y.Rows || x.Bytes != y.Bytes || x.Run != y.Run {
			return false
		}
	}
	return true
}

func cloneChunks(cs []CopyChunk) []CopyChunk {
	out := make([]CopyChunk, len(cs))
	for i, c := range cs {
		c.Lo, c.Hi = slices.Clone(c.Lo), slices.Clone(c.Hi)
		out[i] = c
	}
	return out
}

// pageRefs is the set of pages a stored record references.
func pageRefs(m *Migration) map[string]bool {
	refs := map[string]bool{}
	if m != nil && m.Copy != nil {
		for _, pg := range m.Copy.Pages {
			refs[pg.Hash] = true
		}
	}
	return refs
}

// putMigration adds to w the record of nm (stored holds what its stored version
// references; nil for a new one): the record, and the pages it needs that are not stored
// yet, in w itself when they fit, otherwise written now. It returns the pages to delete
// once w has committed (those w does not delete itself). A record in a spent phase is
// written with its plan spent, and w deletes every page of it.
func (s *Store) putMigration(ctx context.Context, w *write, nm *Migration, stored *Migration) ([]string, error) {
	if copySpent(nm.Phase) {
		nm.Copy = nm.Copy.spent()
		s.plans.forget(nm.ID)
		w.ops = append(w.ops, clientv3.OpDelete(s.key(copyPagesPrefix(nm.ID)), clientv3.WithPrefix()))
		return nil, w.put(s, MigrationKey(nm.ID), nm)
	}
	sm, pages, err := s.storedForm(nm)
	if err != nil {
		return nil, err
	}
	if nm.Copy.unread() {
		return nil, w.put(s, MigrationKey(nm.ID), nm)
	}
	old, refs := pageRefs(stored), pageRefs(sm)
	var puts []clientv3.Op
	for h, b := range pages {
		if !old[h] {
			puts = append(puts, clientv3.OpPut(s.key(copyPageKey(nm.ID, h)), string(b)))
		}
	}
	var dead []string
	for h := range old {
		if !refs[h] {
			dead = append(dead, s.key(copyPageKey(nm.ID, h)))
		}
	}
	if err := w.put(s, MigrationKey(nm.ID), sm); err != nil {
		return nil, err
	}
	room := s.maxTxnOps/2 - len(w.ops) - len(w.events)
	if len(puts)+len(dead) <= room && opBytes(w.ops)+opBytes(puts) <= s.maxTxnBytes {
		w.ops = append(w.ops, puts...)
		for _, k := range dead {
			w.ops = append(w.ops, clientv3.OpDelete(k))
		}
		return nil, nil
	}
	// Unreferenced until the record commits: written with no compare, a re-send or a
	// writer that loses the record's compare-and-swap changes no journal.
	if err := s.sendBatches(ctx, puts); err != nil {
		return nil, fmt.Errorf("write the copy plan of migration %s: %w", nm.ID, err)
	}
	return dead, nil
}

// sendBatches sends ops in transactions of at most half the store's operations and its
// bytes each.
func (s *Store) sendBatches(ctx context.Context, ops []clientv3.Op) error {
	for len(ops) > 0 {
		n, err := s.fit(ops, s.maxTxnOps/2, s.maxTxnBytes)
		if err != nil {
			return err
		}
		if _, _, err := s.sendTxn(ctx, nil, ops[:n]); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// dropPages deletes pages a committed record no longer references. A failure leaves
// them as garbage under the migration's prefix, never a wrong plan.
func (s *Store) dropPages(ctx context.Context, keys []string) {
	var ops []clientv3.Op
	for _, k := range keys {
		ops = append(ops, clientv3.OpDelete(k))
	}
	_ = s.sendBatches(ctx, ops)
}

// fillPlan fills m's plan from the pages read with it (kvs: the migration's page keys
// at the record's revision).
func fillPlan(m *Migration, kvs []*mvccKV) error {
	if m.Copy == nil || len(m.Copy.Pages) == 0 {
		return nil
	}
	byHash := map[string][]byte{}
	for _, kv := range kvs {
		k := string(kv.Key)
		byHash[k[strings.LastIndex(k, "/")+1:]] = kv.Value
	}
	for _, pg := range m.Copy.Pages {
		b, ok := byHash[pg.Hash]
		if !ok || pg.Table < 0 || pg.Table >= len(m.Copy.Tables) {
			return fmt.Errorf("migration %s: page %s of its copy plan is missing: cancel the migration and move again", m.ID, pg.Hash)
		}
		var chunks []CopyChunk
		if err := json.Unmarshal(b, &chunks); err != nil {
			return badValue(copyPageKey(m.ID, pg.Hash), err)
		}
		t := &m.Copy.Tables[pg.Table]
		t.Chunks = append(t.Chunks, chunks...)
	}
	m.Copy.Pages = nil
	return nil
}
