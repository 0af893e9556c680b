package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/testenv"
)

// TestStack proves the harness starts real servers: three PostgreSQL clusters with
// wal_level=logical and an etcd that answers a put and a get.
func TestStack(t *testing.T) {
	start := time.Now()
	pgs := testenv.Postgres(t, 3)
	t.Logf("3 clusters started in %v", time.Since(start))
	ctx := context.Background()
	ports := map[int]bool{}
	for _, p := range pgs {
		conn, err := pgx.Connect(ctx, p.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		var level, version string
		if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version')").Scan(&level, &version); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if level != "logical" {
			t.Errorf("wal_level = %q, want logical", level)
		}
		if ports[p.Port] {
			t.Errorf("port %d used twice", p.Port)
		}
		ports[p.Port] = true
		t.Logf("PostgreSQL %s on port %d, wal_level=%s", version, p.Port, level)
	}
	_, cli := testenv.Etcd(t)
	if _, err := cli.Put(ctx, "/reshard/test", "x"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/reshard/test")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "x" {
		t.Fatalf("etcd get = %v, %v", resp, err)
	}
}
