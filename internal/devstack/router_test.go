package devstack

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
)

// TestCatalogRouter: the router of `dev load --route catalog` holds a write while its range
// is frozen, gives up after its bound with a retryable error, and sends a held write to the
// new owner once the range flips.
func TestCatalogRouter(t *testing.T) {
	srv, _ := testenv.Etcd(t)
	ctx := context.Background()
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{srv.Endpoint()}}, Cluster)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSN: "host=two dbname=app"}}
	if err := store.Init(ctx, catalog.Config{Cluster: Cluster, Key: demo.Key, Tables: demo.Tables}, shards, nil, false); err != nil {
		t.Fatal(err)
	}
	r, err := newCatalogRouter(ctx, srv.Endpoint(), Cluster)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const low, high = int64(-5), int64(5) // on s1 and s2 under the even split of two shards
	for tenant, want := range map[int64]string{low: "host=one dbname=app", high: "host=two dbname=app"} {
		if got, err := r.ShardFor(ctx, tenant); err != nil || got != want {
			t.Fatalf("tenant %d: %q, %v; want %q", tenant, got, err, want)
		}
	}

	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lo := st.Ranges[0].Range.Lo
	m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: st.Ranges[0].Range, Source: "s1", Target: "s2", Phase: catalog.PhasePlanned}
	if err := store.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := store.Freeze(ctx, st, lo, m); err != nil {
		t.Fatal(err)
	}
	// The router's copy follows etcd a moment later.
	if _, err := r.cache.WaitRevision(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	r.hold = 300 * time.Millisecond
	start := time.Now()
	_, err = r.ShardFor(ctx, low)
	if !errors.Is(err, errRangeFrozen) || time.Since(start) < r.hold {
		t.Fatalf("frozen range: %v after %v, want errRangeFrozen after holding %v", err, time.Since(start), r.hold)
	}
	if got, err := r.ShardFor(ctx, high); err != nil || got != "host=two dbname=app" {
		t.Fatalf("a serving range is held too: %q, %v", got, err)
	}

	r.hold = time.Minute
	flipped := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		flipped <- store.Flip(ctx, st, lo, m, "s2")
	}()
	got, err := r.ShardFor(ctx, low)
	if ferr := <-flipped; ferr != nil {
		t.Fatal(ferr)
	}
	if err != nil || got != "host=two dbname=app" {
		t.Fatalf("held write after the flip: %q, %v; want s2's DSN", got, err)
	}
}
