package devstack

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// Distributions of `dev up --distribution`: the demo's tenant key and keyspace.
const (
	DistRange = string(catalog.DistRange) // bigint tenant ids, ranges over the ids (`make demo`)
	DistHash  = string(catalog.DistHash)  // uuid tenant ids, ranges over uuid_hash_extended(id, 0)
)

// Hashed reports whether the stack's tenants are uuids placed by their hash.
func (d DataState) Hashed() bool { return d.Distribution == DistHash }

// checkDistribution refuses a --distribution the demo does not make.
func checkDistribution(d string) error {
	if d != "" && d != DistRange && d != DistHash {
		return fmt.Errorf("--distribution %q: use range (bigint tenant ids) or hash (uuid tenant ids)", d)
	}
	return nil
}

// PlacedTenant is a demo tenant as `dev up` reports it.
type PlacedTenant struct {
	ID     string  `json:"id"`
	Plan   string  `json:"plan"`
	Weight float64 `json:"weight"`
}

// dataSet is the demo data of the stack's key type, for Up.
type dataSet interface {
	count() int
	// place puts each tenant on the shard whose range holds its position.
	place(ranges []catalog.Range) (map[string][]PlacedTenant, error)
	// load creates the schema on a shard and loads the tenants place put there.
	load(ctx context.Context, conn *pgx.Conn, shard string, opts demo.DataOptions) (demo.Counts, error)
}

type tenantsOf[K demo.TenantID] struct {
	all    []demo.TenantOf[K]
	placed map[string][]demo.TenantOf[K]
}

// newDataSet generates the tenants of opts with the key type of distribution d.
func newDataSet(d string, opts demo.DataOptions) (dataSet, error) {
	if d == DistHash {
		return generate[demo.UUID](opts)
	}
	return generate[int64](opts)
}

func generate[K demo.TenantID](opts demo.DataOptions) (dataSet, error) {
	all, err := demo.GenerateTenantsOf[K](opts)
	if err != nil {
		return nil, err
	}
	return &tenantsOf[K]{all: all}, nil
}

func (t *tenantsOf[K]) count() int { return len(t.all) }

func (t *tenantsOf[K]) place(ranges []catalog.Range) (map[string][]PlacedTenant, error) {
	var err error
	if t.placed, err = demo.Place(t.all, ranges); err != nil {
		return nil, err
	}
	out := map[string][]PlacedTenant{}
	for shard, ts := range t.placed {
		for _, tn := range ts {
			out[shard] = append(out[shard], PlacedTenant{ID: fmt.Sprint(tn.ID), Plan: tn.Plan, Weight: tn.Weight})
		}
	}
	return out, nil
}

func (t *tenantsOf[K]) load(ctx context.Context, conn *pgx.Conn, shard string, opts demo.DataOptions) (demo.Counts, error) {
	if err := demo.CreateSchemaOf[K](ctx, conn, opts.Now); err != nil {
		return nil, err
	}
	return demo.LoadShard(ctx, conn, t.placed[shard], opts)
}
