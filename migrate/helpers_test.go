package migrate

import (
	"context"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/cutover/cutovertest"
)

// copiedMover stands for a mover whose copy is complete and caught up: it moves no data
// and counts what the executor asks of it. The tests that claim data moved use the real
// mover (apply_test.go, integration).
type copiedMover struct{ stopped, dropped, removed int }

func (r *copiedMover) WaitApplied(context.Context, pglogrepl.LSN) error { return nil }
func (r *copiedMover) Stop(context.Context) error                       { r.stopped++; return nil }
func (r *copiedMover) DropReplication(context.Context) error            { r.dropped++; return nil }
func (r *copiedMover) Remove(context.Context, bool) error               { r.removed++; return nil }
func (r *copiedMover) Start(context.Context) error                      { return nil }
func (r *copiedMover) Lag(context.Context) (int64, float64, error)      { return 0, 0, nil }
func (r *copiedMover) Err() error                                       { return nil }

type fixture struct {
	env   cutover.Env
	store *catalog.Store
	fx    cutovertest.Fixture
}

// setup is cutovertest's fixture with the guard installed on the source, as the
// migration's start leaves it, and migration m1 of its range caught up.
func setup(t *testing.T) (fixture, *catalog.Migration) {
	t.Helper()
	fx := cutovertest.New(t)
	if err := cutover.InstallGuard(context.Background(), fx.Source, catalog.RangeOn(fx.Key), fx.Tables); err != nil {
		t.Fatal(err)
	}
	env := cutover.Env{Catalog: fx.Store, Source: fx.Source, Target: fx.Target, Key: fx.Key, Tables: fx.Tables}
	return fixture{env: env, store: fx.Store, fx: fx}, fx.Migration(t)
}
