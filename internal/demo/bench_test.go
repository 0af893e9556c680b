package demo_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
)

// BenchmarkLoadShard measures `dev up`'s data load: the whole scale-1 data set (200 tenants,
// about 60,000 orders and 330,000 rows in all) into one shard, schema included. Target: well
// under a minute on 2 cores (dev up loads N shards at once).
func BenchmarkLoadShard(b *testing.B) {
	ctx := context.Background()
	pg := testenv.Postgres(b, 1)[0]
	opts := demo.DataOptions{Seed: 1}
	tenants, err := demo.GenerateTenants(opts)
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
		if err := demo.CreateSchema(ctx, conn, time.Now()); err != nil {
			b.Fatal(err)
		}
		counts, err := demo.LoadShard(ctx, conn, tenants, opts)
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
