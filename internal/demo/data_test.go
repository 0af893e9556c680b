package demo

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

func TestGenerateTenantsSkew(t *testing.T) {
	cases := []struct {
		name             string
		opts             DataOptions
		top1Min, top1Max float64 // share of the heaviest tenant
		top5Min          float64 // share of the 5 heaviest
		bottomHalfMax    float64 // share of the lighter half
	}{
		{"default", DataOptions{}, 0.15, 0.35, 0.40, 0.20},
		{"many tenants", DataOptions{Tenants: 2000}, 0.08, 0.30, 0.25, 0.20},
		{"steeper", DataOptions{Skew: 1.5}, 0.30, 0.50, 0.60, 0.10},
		{"uniform", DataOptions{Skew: 0.0001, Tenants: 100}, 0.009, 0.011, 0.04, 0.51},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := GenerateTenants(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			top1, top5 := Share(ts, 1), Share(ts, 5)
			bottom := 1 - Share(ts, len(ts)-len(ts)/2)
			t.Logf("top1 %.3f top5 %.3f bottom half %.3f", top1, top5, bottom)
			if top1 < tc.top1Min || top1 > tc.top1Max {
				t.Errorf("top tenant share %.3f, want %.2f..%.2f", top1, tc.top1Min, tc.top1Max)
			}
			if top5 < tc.top5Min {
				t.Errorf("top 5 share %.3f, want >= %.2f", top5, tc.top5Min)
			}
			if bottom > tc.bottomHalfMax {
				t.Errorf("lighter half share %.3f, want <= %.2f", bottom, tc.bottomHalfMax)
			}
			// Orders follow the weights: the heaviest tenant has the most orders.
			for i := 1; i < len(ts); i++ {
				if ts[i].Orders > ts[i-1].Orders || ts[i].Orders < minOrders {
					t.Fatalf("orders not decreasing with rank or under %d: rank %d has %d, rank %d has %d",
						minOrders, i, ts[i-1].Orders, i+1, ts[i].Orders)
				}
			}
		})
	}
}

func TestGenerateTenantsDeterministic(t *testing.T) {
	opts := DataOptions{Tenants: 300, Seed: 7, Now: time.Unix(1_800_000_000, 0)}
	a, _ := GenerateTenants(opts)
	b, _ := GenerateTenants(opts)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same options gave different tenants")
	}
	opts.Seed = 8
	c, _ := GenerateTenants(opts)
	if reflect.DeepEqual(a, c) {
		t.Fatal("another seed gave the same tenants")
	}
	ids := map[int64]bool{}
	for _, tn := range a {
		if ids[tn.ID] {
			t.Fatalf("tenant id %d twice", tn.ID)
		}
		ids[tn.ID] = true
	}
}

func TestPlacementHotShard(t *testing.T) {
	for _, shards := range [][]string{{"s1"}, {"s1", "s2"}, {"s1", "s2", "s3"}, {"s1", "s2", "s3", "s4", "s5"}} {
		t.Run(strings.Join(shards, ","), func(t *testing.T) {
			ranges := catalog.EvenRanges(shards)
			ts, err := GenerateTenants(DataOptions{HotRange: ranges[0].Range})
			if err != nil {
				t.Fatal(err)
			}
			placed, err := Place(ts, ranges)
			if err != nil {
				t.Fatal(err)
			}
			weight := map[string]float64{}
			total := 0
			for _, s := range shards {
				if len(placed[s]) == 0 {
					t.Errorf("shard %s got no tenant", s)
				}
				total += len(placed[s])
				for _, tn := range placed[s] {
					weight[s] += tn.Weight
					if !ownerOf(ranges, tn.ID, s) {
						t.Errorf("tenant %d placed on %s, which does not own it", tn.ID, s)
					}
				}
			}
			if total != len(ts) {
				t.Errorf("placed %d tenants, want %d", total, len(ts))
			}
			for _, tn := range ts[:DefaultHot] {
				if !ranges[0].Range.Contains(tn.ID) {
					t.Errorf("hot tenant %d (rank %d) outside the hot range %s", tn.ID, tn.Rank, ranges[0].Range)
				}
			}
			t.Logf("weights per shard: %v", weight)
			if len(shards) > 1 {
				for _, s := range shards[1:] {
					if weight["s1"] < 2*weight[s] {
						t.Errorf("s1 holds %.2f of the weight, not clearly more than %s's %.2f", weight["s1"], s, weight[s])
					}
				}
			}
		})
	}
}

func ownerOf(ranges []catalog.Range, id int64, shard string) bool {
	for _, r := range ranges {
		if r.Range.Contains(id) {
			return r.Shard == shard
		}
	}
	return false
}

func TestDataOptionsRejected(t *testing.T) {
	for _, o := range []DataOptions{{Tenants: -1}, {Scale: -2}, {Skew: 9}, {Hot: -1}} {
		if _, err := GenerateTenants(o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}

func TestGenLedgerMatchesOrders(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	g := &gen{seed: 1, now: now, evFrom: now.Truncate(24*time.Hour).AddDate(0, 0, -(DataDays - 1))}
	tn := Tenant{ID: 42, Orders: 500}
	for j := range tn.Orders {
		o := g.order(tn, j)
		var sum int64
		for _, it := range o.items {
			sum += int64(it.qty) * it.price
		}
		if sum != o.total || len(o.items) < 1 || len(o.items) > 4 {
			t.Fatalf("order %d: total %d, items sum %d, %d items", j, o.total, sum, len(o.items))
		}
		if o.eventAt.Before(g.evFrom) || o.eventAt.After(now) {
			t.Fatalf("order %d: event at %s outside [%s, %s]", j, o.eventAt, g.evFrom, now)
		}
		if again := g.order(tn, j); again.total != o.total || again.status != o.status {
			t.Fatalf("order %d not reproducible", j)
		}
	}
}

func TestLoadShardData(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, DataOptions{Tenants: 40, Scale: 0.1, Seed: 3})
	total := int64(0)
	for name, db := range s.pool {
		if err := CheckBalances(ctx, db); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		var orders, items, orphanItems, events, inDefault int64
		q := `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
			(SELECT count(*) FROM order_items i WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = i.tenant_id AND o.id = i.order_id)),
			(SELECT count(*) FROM events), (SELECT count(*) FROM events_default)`
		if err := db.QueryRow(ctx, q).Scan(&orders, &items, &orphanItems, &events, &inDefault); err != nil {
			t.Fatal(err)
		}
		if orphanItems != 0 || inDefault != 0 || events != orders || items < orders {
			t.Errorf("%s: orders %d items %d (orphans %d) events %d (in default %d)", name, orders, items, orphanItems, events, inDefault)
		}
		// Every row is on the shard that owns its tenant.
		rows, err := db.Query(ctx, "SELECT tenant_id FROM tenants")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if s.owner(id) != name {
				t.Errorf("tenant %d on %s, owned by %s", id, name, s.owner(id))
			}
		}
		total += orders
	}
	want := int64(0)
	for _, tn := range s.tenants {
		want += int64(tn.Orders)
	}
	if total != want {
		t.Errorf("%d orders over the shards, want %d", total, want)
	}
}

// BenchmarkLoadShard measures `dev up`'s data load: the whole scale-1 data set (200 tenants,
// about 60,000 orders and 330,000 rows in all) into one shard, schema included. Target: well
// under a minute on 2 cores (dev up loads N shards at once).
func BenchmarkLoadShard(b *testing.B) {
	ctx := context.Background()
	pg := testenv.Postgres(b, 1)[0]
	opts := DataOptions{Seed: 1}
	tenants, err := GenerateTenants(opts)
	if err != nil {
		b.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	var rows int64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		db := fmt.Sprintf("bench%d", i)
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			b.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, pg.DSN(db))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := CreateSchema(ctx, conn, time.Now()); err != nil {
			b.Fatal(err)
		}
		counts, err := LoadShard(ctx, conn, tenants, opts)
		if err != nil {
			b.Fatal(err)
		}
		rows = 0
		for _, n := range counts {
			rows += n
		}
		b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
		conn.Close(ctx)
	}
	b.ReportMetric(float64(rows), "rows")
}
