package devstack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// errRangeFrozen means the tenant's range stayed frozen for a cutover longer than the
// router holds a write: the load retries it.
var errRangeFrozen = errors.New("range frozen for a cutover")

// catalogRouter routes by the catalog's Resolver (a watched copy of the catalog): a write
// to a frozen range is held until the range serves again, then sent to its owner then.
type catalogRouter[K demo.TenantID] struct {
	store *catalog.Store
	cache *catalog.Cache
	res   *catalog.Resolver
	hold  time.Duration // longest a write is held for a frozen range
}

func newCatalogRouter(ctx context.Context, endpoint, cluster string) (*catalogRouter[int64], error) {
	return newCatalogRouterOf[int64](ctx, endpoint, cluster)
}

func newCatalogRouterOf[K demo.TenantID](ctx context.Context, endpoint, cluster string) (*catalogRouter[K], error) {
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{endpoint}}, cluster)
	if err != nil {
		return nil, err
	}
	cache, err := store.Watch(context.WithoutCancel(ctx))
	if err != nil {
		store.Close()
		return nil, err
	}
	return &catalogRouter[K]{store: store, cache: cache, res: catalog.NewResolver(cache), hold: 10 * time.Second}, nil
}

// ShardFor returns the DSN of the shard that owns tenant, once its range serves. The
// resolver places the key by the catalog's keyspace (its hash under hash).
func (r *catalogRouter[K]) ShardFor(ctx context.Context, tenant K) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, r.hold)
	defer cancel()
	rt, err := r.res.WaitServingKey(wctx, demo.KeyOf(tenant))
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("tenant %v, range %s: %w", tenant, rt.Range, errRangeFrozen)
		}
		return "", err
	}
	sh, ok := r.cache.State().Shards[rt.Shard]
	if !ok {
		return "", fmt.Errorf("range %s names shard %q, which the catalog does not list", rt.Range, rt.Shard)
	}
	return sh.ConnString()
}

func (r *catalogRouter[K]) Close() {
	r.cache.Close()
	r.store.Close()
}
