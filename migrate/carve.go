package migrate

import (
	"context"

	"github.com/reshard/reshard/catalog"
)

// Carve splits the catalog so that r is exactly one range: r must lie inside one serving
// range, which is cut at r's bounds. Both parts stay on their shard, so no data moves and
// no write waits. It returns the state after the splits.
func Carve(ctx context.Context, cat Catalog, r catalog.KeyRange) (*catalog.State, error) {
	st, err := cat.Load(ctx)
	if err != nil {
		return nil, err
	}
	owner, err := holder(st, r)
	if err != nil {
		return nil, err
	}
	if owner.Range.Equal(r) {
		return st, nil
	}
	if err := notServing(owner); err != nil {
		return nil, err
	}
	if r.Lo > owner.Range.Lo {
		if err := cat.Split(ctx, st, owner.Range.Lo, r.Lo); err != nil {
			return nil, err
		}
	}
	if !r.HiInf && (owner.Range.HiInf || r.Hi < owner.Range.Hi) {
		if err := cat.Split(ctx, st, r.Lo, r.Hi); err != nil {
			return nil, err
		}
	}
	return st, nil
}
