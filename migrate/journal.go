package migrate

import (
	"context"
	"errors"
	"sync"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
)

// Journal lets the mover checkpoint into the migration's etcd record while the executor
// drives the same record. Until the cutover starts the mover is the only writer; Seal
// hands the record to the executor and turns further mover checkpoints into no-ops, so
// a late checkpoint can never move the phase back or race the flip's revision compare.
type Journal struct {
	cat    cutover.Catalog
	mu     sync.Mutex
	cur    *catalog.Migration
	sealed bool
	stale  bool // the last write failed: read the stored revision before the next
}

// NewJournal starts a journal from the stored record m.
func NewJournal(cat cutover.Catalog, m *catalog.Migration) *Journal {
	c := *m
	return &Journal{cat: cat, cur: &c}
}

// Load returns a copy of the current record (the mover.Journal contract: nil if none).
func (j *Journal) Load(ctx context.Context, id string) (*catalog.Migration, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	// A sealed journal is the executor's: its record may have moved on (a flip, a
	// rollback) since the copy was cached, and whoever reads it decides on it.
	if j.sealed || j.cur == nil || j.cur.ID != id {
		m, err := j.cat.GetMigration(ctx, id)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil, nil
		}
		return m, err
	}
	c := *j.cur
	return &c, nil
}

// Save writes the mover's view of the record, unless the executor has sealed it.
func (j *Journal) Save(ctx context.Context, m *catalog.Migration) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sealed {
		return nil
	}
	for attempt := 0; ; attempt++ {
		if j.stale {
			// The last write's outcome is unknown (its context ended, or etcd did not
			// answer): it may have committed, or still be in flight and commit later. The
			// mover is the record's only writer until Seal (the executor's catalog compares
			// the migration lock in every write), so the stored revision is ours to build on.
			cur, err := j.cat.GetMigration(ctx, m.ID)
			if err != nil {
				return err
			}
			j.cur.ModRev, j.stale = cur.ModRev, false
		}
		c := *m
		c.ModRev = j.cur.ModRev
		// The executor's fields are not the mover's to change.
		c.Plan, c.Owner, c.Kind = j.cur.Plan, j.cur.Owner, j.cur.Kind
		err := j.cat.PutMigration(ctx, &c)
		if err == nil {
			j.cur = &c
			return nil
		}
		j.stale = true
		// A conflict with the lock still held is one of our own earlier writes landing
		// late: read the revision again and write on top of it (m is newer).
		if attempt == 2 || !errors.Is(err, catalog.ErrConflict) || errors.Is(err, catalog.ErrLockLost) {
			return err
		}
	}
}

// Seal stops mover checkpoints and returns the latest record for the executor.
func (j *Journal) Seal() *catalog.Migration {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.sealed = true
	c := *j.cur
	return &c
}

// Unseal gives the record back to the mover (after a cutover was undone for a retry).
func (j *Journal) Unseal(m *catalog.Migration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	c := *m
	j.cur, j.sealed = &c, false
}

// sealedJournal gives a mover the record to read but not to write: for the cleanup and
// cancel work the executor journals itself.
func sealedJournal(cat cutover.Catalog, m *catalog.Migration) *Journal {
	j := NewJournal(cat, m)
	j.Seal()
	return j
}
