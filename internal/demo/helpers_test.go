package demo

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgcluster"
	"github.com/reshard/reshard/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgcluster.RemoveTemplate()
	os.Exit(code)
}

// stack is two real shards with the demo schema and a small data set, keyed by int64.
type stack = stackOf[int64]

// stackOf is two real shards, the key line split evenly between them, with the demo schema
// of tenant_id type K and a small data set.
type stackOf[K TenantID] struct {
	ranges  []catalog.Range
	dsn     map[string]string
	db      map[string]Querier
	pool    map[string]*pgxpool.Pool
	tenants []TenantOf[K]
	placed  map[string][]TenantOf[K] // the tenants each shard holds
}

// owner is the shard that owns a key line position (a tenant's Position).
func (s *stackOf[K]) owner(tenant int64) string {
	st := catalog.State{Ranges: s.ranges}
	r, _ := st.Owner(tenant)
	return r.Shard
}

func newStack(t *testing.T, opts DataOptions) *stack {
	t.Helper()
	return newStackOf[int64](t, opts)
}

func newStackOf[K TenantID](t *testing.T, opts DataOptions) *stackOf[K] {
	t.Helper()
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	names := []string{"s1", "s2"}
	s := &stackOf[K]{ranges: catalog.EvenRanges(names), dsn: map[string]string{}, db: map[string]Querier{}, pool: map[string]*pgxpool.Pool{}}
	opts.HotRange = s.ranges[0].Range
	var err error
	if s.tenants, err = GenerateTenantsOf[K](opts); err != nil {
		t.Fatal(err)
	}
	placed, err := Place(s.tenants, s.ranges)
	if err != nil {
		t.Fatal(err)
	}
	s.placed = placed
	for i, name := range names {
		s.dsn[name] = pgs[i].DSNApp()
		s.pool[name] = pgs[i].Pool(ctx)
		s.db[name] = s.pool[name]
		conn, err := pgx.Connect(ctx, pgs[i].DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		if err := CreateSchemaOf[K](ctx, conn, time.Now()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		counts, err := LoadShard(ctx, conn, placed[name], opts)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d tenants loaded in %v: %v", name, len(placed[name]), time.Since(start).Round(time.Millisecond), counts)
		if counts["tenants"] != int64(len(placed[name])) {
			t.Fatalf("%s: %d tenants rows, want %d", name, counts["tenants"], len(placed[name]))
		}
	}
	return s
}
