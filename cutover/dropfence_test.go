package cutover

import (
	"context"
	"slices"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestDropFenceMatchesIDExactly: a migration's fence is its own row and the parts
// ClearTombstones cut it into ("<id>.<n>", "<id>.<n>.<m>"), never the fence of another
// migration whose id differs where a LIKE wildcard ('_') would match.
func TestDropFenceMatchesIDExactly(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db := connect(t, pg.DSNApp())
	if err := InstallGuard(ctx, db, "tenant_id", []string{"tenants"}); err != nil {
		t.Fatal(err)
	}
	all := []string{"a_b", "a_b.1", "a_b.1.2", "axb", "axb.1", "a_b_c.1", "a_bb.1", "a1b.2", "xa_b.1"}
	tests := []struct {
		drop string
		left []string
	}{
		{"a_b", []string{"a1b.2", "a_b_c.1", "a_bb.1", "axb", "axb.1", "xa_b.1"}},
		{"axb", []string{"a1b.2", "a_b", "a_b.1", "a_b.1.2", "a_b_c.1", "a_bb.1", "xa_b.1"}},
		{"a_", []string{"a1b.2", "a_b", "a_b.1", "a_b.1.2", "a_b_c.1", "a_bb.1", "axb", "axb.1", "xa_b.1"}},
	}
	for _, tt := range tests {
		pg.Exec(ctx, `TRUNCATE reshard.fence`)
		for i, id := range all {
			if err := SetFence(ctx, db, id, catalog.NewRange(int64(i*10), int64(i*10+10)), []string{"tenants"}, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := DropFence(ctx, db, tt.drop, 1); err != nil {
			t.Fatalf("DropFence(%s): %v", tt.drop, err)
		}
		rows, err := db.Query(ctx, `SELECT migration FROM reshard.fence ORDER BY migration COLLATE "C"`)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			left = append(left, id)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(left, tt.left) {
			t.Errorf("DropFence(%s) left %v; want %v", tt.drop, left, tt.left)
		}
	}
}
