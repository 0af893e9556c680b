package devstack

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
)

// errRangeFrozen means the tenant's range stayed frozen for a cutover longer than the
// router holds a write: the load retries it.
var errRangeFrozen = errors.New("range frozen for a cutover")

// catalogRouter routes by the catalog's Resolver (a watched copy of the catalog): a write
// to a frozen range is held until the range serves again, then sent to its owner then.
type catalogRouter struct {
	store *catalog.Store
	cache *catalog.Cache
	res   *catalog.Resolver
	hold  time.Duration // longest a write is held for a frozen range
}

func newCatalogRouter(ctx context.Context, endpoint, cluster string) (*catalogRouter, error) {
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{endpoint}}, cluster)
	if err != nil {
		return nil, err
	}
	cache, err := store.Watch(context.WithoutCancel(ctx))
	if err != nil {
		store.Close()
		return nil, err
	}
	return &catalogRouter{store: store, cache: cache, res: catalog.NewResolver(cache), hold: 10 * time.Second}, nil
}

// ShardFor returns the DSN of the shard that owns tenant, once its range serves.
func (r *catalogRouter) ShardFor(ctx context.Context, tenant int64) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, r.hold)
	defer cancel()
	rt, err := r.res.WaitServing(wctx, tenant)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("tenant %d, range %s: %w", tenant, rt.Range, errRangeFrozen)
		}
		return "", err
	}
	sh, ok := r.cache.State().Shards[rt.Shard]
	if !ok {
		return "", fmt.Errorf("range %s names shard %q, which the catalog does not list", rt.Range, rt.Shard)
	}
	return sh.ConnString()
}

func (r *catalogRouter) Close() {
	r.cache.Close()
	r.store.Close()
}
