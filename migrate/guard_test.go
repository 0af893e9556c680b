package migrate

import (
	"context"
	"errors"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
)

// guardLeft counts the guard triggers and functions on a shard.
func guardLeft(t *testing.T, db cutover.Querier) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'reshard_fence')
		+ (SELECT count(*) FROM pg_proc WHERE proname = 'fence_guard')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRollbackAndCancelRemoveGuard: a rolled back or cancelled migration leaves no guard
// trigger or function on its source or target (the target is fenced too until the flip),
// unless another unfinished migration still uses the shard.
func TestRollbackAndCancelRemoveGuard(t *testing.T) {
	tests := []struct {
		name     string
		cancel   bool
		other    bool // another unfinished migration s1 -> s2
		wantKept bool
	}{
		{"rollback", false, false, false},
		{"cancel", true, false, false},
		{"rollback while another migration uses the shards", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f, m := setup(t)
			if err := cutover.InstallGuard(ctx, f.env.Target, f.env.Keyspace(), f.env.Tables); err != nil {
				t.Fatal(err)
			}
			if tt.other {
				o := &catalog.Migration{ID: "other", Kind: catalog.KindMove, Range: catalog.Below(10), Source: "s1", Target: "s2", Phase: catalog.PhaseCopying}
				if err := f.store.PutMigration(ctx, o); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if tt.cancel {
				ex := &Executor{Catalog: f.store, DSN: catalog.Shard.ConnString,
					Lock: func(ctx context.Context, id string) (*catalog.Lock, error) {
						return f.store.TryLockMigration(ctx, id)
					},
					NewMover: func(*catalog.Migration, string, string, *Journal, int64) (Mover, error) {
						return &copiedMover{}, nil
					}}
				_, err = ex.Cancel(ctx, m.ID)
			} else {
				err = Rollback(ctx, f.env, &copiedMover{}, m, errors.New("test"))
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, db := range map[string]cutover.Querier{"source": f.env.Source, "target": f.env.Target} {
				if n := guardLeft(t, db); (n > 0) != tt.wantKept {
					t.Errorf("%s: %d guard triggers and functions left, want kept=%v", name, n, tt.wantKept)
				}
			}
		})
	}
}
