package catalog

import (
	"context"
	"encoding/json"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/internal/testenv"
)

func testStore(t *testing.T, opts ...Option) (*Store, *clientv3.Client) {
	t.Helper()
	return testStoreB(t, opts...)
}

func testStoreB(t testing.TB, opts ...Option) (*Store, *clientv3.Client) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	s, err := NewStore(cli, "demo", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, cli
}

func demoConfig() Config {
	return Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"tenants", "orders"}}
}

func demoShards(names ...string) []Shard {
	var out []Shard
	for _, n := range names {
		out = append(out, Shard{Name: n, DSN: "host=127.0.0.1 dbname=" + n})
	}
	return out
}

// initDemo writes a catalog with shards s1, s2, s3 and ranges :0 on s1, 0:1000 on s2, 1000: on s3.
func initDemo(t *testing.T, s *Store) *State {
	t.Helper()
	ctx := context.Background()
	ranges := []Range{{Range: Below(0), Shard: "s1"}, {Range: NewRange(0, 1000), Shard: "s2"}, {Range: From(1000), Shard: "s3"}}
	if err := s.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), ranges, false); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newMigration(t *testing.T, s *Store, id string, r Range, target string) *Migration {
	t.Helper()
	m := &Migration{ID: id, Kind: KindMove, Range: r.Range, Source: r.Shard, Target: target, Phase: PhaseCatchingUp}
	if err := s.PutMigration(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
