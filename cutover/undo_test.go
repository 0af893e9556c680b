package cutover

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover/cutovertest"
)

// TestUndoTouchesNothingBeforeItsJournalWrite: an undo whose journal write is refused
// leaves the source fenced (migrate's TestRollbackTouchesNothingBeforeItsJournalWrite
// shows the same of a rollback). Before the fix the fence went first.
func TestUndoTouchesNothingBeforeItsJournalWrite(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	m := newMigration(t, f)
	if err := SetFence(ctx, f.env.Source, m.ID, m.Range, f.env.Tables, 0); err != nil {
		t.Fatal(err)
	}
	env := f.env
	env.Catalog = cutovertest.WritesRefused{Store: f.store}
	if err := Undo(ctx, env, m); !errors.Is(err, cutovertest.ErrRefused) {
		t.Fatalf("Undo = %v, want the refused write", err)
	}
	if _, err := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`); !IsFenceError(err) {
		t.Errorf("write to the source after the refused undo: %v, want the fence error (the fence must stay)", err)
	}
}

// lateFlip plays an etcd whose answer to the flip is lost while the flip itself is still
// in flight: Flip returns an error at once, and the real transaction commits when the
// catalog is next read for the land-th time (or never, for land 0).
type lateFlip struct {
	*catalog.Store
	land int

	mu    sync.Mutex
	reads int
	fire  func()
}

func (c *lateFlip) Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, to string, opts ...catalog.WriteOption) error {
	st2, m2 := st.Clone(), *m
	c.mu.Lock()
	c.fire = func() { _ = c.Store.Flip(context.Background(), st2, lo, &m2, to, opts...) }
	c.mu.Unlock()
	return errors.New("etcdserver: request timed out")
}

func (c *lateFlip) read() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fire == nil {
		return
	}
	c.reads++
	if c.reads == c.land {
		c.fire()
	}
}

func (c *lateFlip) GetMigration(ctx context.Context, id string) (*catalog.Migration, error) {
	c.read()
	return c.Store.GetMigration(ctx, id)
}

func (c *lateFlip) Load(ctx context.Context) (*catalog.State, error) {
	c.read()
	return c.Store.Load(ctx)
}

func (c *lateFlip) LoadRange(ctx context.Context, lo int64, shards ...string) (*catalog.State, error) {
	c.read()
	return c.Store.LoadRange(ctx, lo, shards...)
}

// TestUnknownFlipKeepsTheFence: the flip's answer is lost and the flip commits while the
// driver decides what that means. Whenever it lands, the end state is one of two: flipped,
// with the source still fenced, or not flipped, with the range serving on the source
// (and a late flip refused). Before the fix, an undo that read "not flipped" dropped the
// fence before it moved the journal, and a flip landing in between left the old owner
// unfenced while the new one owned the range.
func TestUnknownFlipKeepsTheFence(t *testing.T) {
	for _, tt := range []struct {
		name    string
		land    int // the catalog read at which the flip commits
		flipped bool
	}{
		{"lands at the driver's first read", 1, true},
		{"lands between the undo's reads", 3, true},
		{"lands after the undo", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := setup(t)
			f.env.Mover = &copiedReplicator{}
			cat := &lateFlip{Store: f.store, land: tt.land}
			f.env.Catalog = cat
			m := newMigration(t, f)
			_, err := Run(ctx, f.env, m, Options{})
			if cat.fire != nil && tt.land == 0 {
				cat.fire() // the flip arrives after all: it must be refused
			}
			st, lerr := f.store.Load(ctx)
			if lerr != nil {
				t.Fatal(lerr)
			}
			owner, _ := st.Owner(15)
			_, werr := f.env.Source.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (12, 1)`)
			if tt.flipped {
				if err != nil || owner.Shard != "s2" || owner.State != catalog.RangeServing {
					t.Fatalf("Run = %v, owner %+v: want flipped to s2", err, owner)
				}
				if !IsFenceError(werr) {
					t.Errorf("write to the old owner after the flip: %v, want the fence error", werr)
				}
				return
			}
			if err == nil || owner.Shard != "s1" || owner.State != catalog.RangeServing {
				t.Fatalf("Run = %v, owner %+v: want the cutover undone, s1 serving", err, owner)
			}
			if werr != nil {
				t.Errorf("write to the source after the undo: %v", werr)
			}
		})
	}
}

// failedFlip is a catalog whose flip fails for certain (its compares did not hold).
type failedFlip struct{ *catalog.Store }

func (failedFlip) Flip(context.Context, *catalog.State, int64, *catalog.Migration, string, ...catalog.WriteOption) error {
	return catalog.ErrConflict
}

// TestFailedFlipKeepsTargetTombstone: a range moving back to a shard it once left finds a
// tombstone there; when its flip fails, the tombstone still fences the range on that
// shard (it does not own it). Before the fix the tombstone was lifted before the flip and
// not restored by the undo, so the target took writes for a range it did not own.
func TestFailedFlipKeepsTargetTombstone(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	f.env.Mover = &copiedReplicator{}
	if err := InstallGuard(ctx, f.env.Target, f.env.Keyspace(), f.env.Tables); err != nil {
		t.Fatal(err)
	}
	if err := MarkTombstone(ctx, f.env.Target, "earlier", catalog.NewRange(0, 100), 0); err != nil {
		t.Fatal(err)
	}
	f.env.Catalog = failedFlip{f.store}
	m := newMigration(t, f)
	if _, err := Run(ctx, f.env, m, Options{}); err == nil {
		t.Fatal("Run succeeded with a failing flip")
	}
	if _, err := f.env.Target.Exec(ctx, `INSERT INTO orders (tenant_id, total) VALUES (15, 1)`); !IsFenceError(err) {
		t.Errorf("write to the range on the target after the failed flip: %v, want the fence error", err)
	}
}
