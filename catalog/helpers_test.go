package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reshard/reshard/internal/etcdserver"
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

// A second process: its own client on the same etcd, closed without unlocking to play a
// process that died.
func otherProcess(t *testing.T, srv *etcdserver.Server, holder string) (*Store, *clientv3.Client) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(cli, "demo", WithHolder(holder))
	if err != nil {
		t.Fatal(err)
	}
	return s, cli
}

// twoProcesses starts an etcd with two processes' stores on it: a's on the test's client
// and b's on a client of its own (otherProcess), which the caller closes to play b's death.
func twoProcesses(t *testing.T, a, b string) (*Store, *Store, *clientv3.Client) {
	t.Helper()
	srv, cli := testenv.Etcd(t)
	sa, err := NewStore(cli, "demo", WithHolder(a))
	if err != nil {
		t.Fatal(err)
	}
	sb, bcli := otherProcess(t, srv, b)
	return sa, sb, bcli
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

// demoMove is initDemo's catalog with migration mv1 planned to move [0, 1000) from s2 to
// s3: the start of most tests of freezes, flips and journal writes.
func demoMove(t *testing.T) (*Store, *clientv3.Client, *State, *Migration) {
	t.Helper()
	s, cli := testStore(t)
	st := initDemo(t, s)
	return s, cli, st, newMigration(t, s, "mv1", st.Ranges[1], "s3")
}

// exportOf is s's export, decoded.
func exportOf(t *testing.T, s *Store) Export {
	t.Helper()
	data, err := s.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ex Export
	if err := json.Unmarshal(data, &ex); err != nil {
		t.Fatal(err)
	}
	return ex
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flipChecks run inside allocatedPerFlip's loop after freeze i and after flip i (to the
// shard named); nil: no check.
type flipChecks struct {
	frozen, flipped func(i int, m *Migration, to string)
}

// allocatedPerFlip freezes and flips st.Ranges[1] between s2 and s1 n times, one new
// migration each, and returns what each freeze and flip allocated in the whole process
// (etcd and its client included): the measure of whether a write copies the catalog.
func allocatedPerFlip(t *testing.T, s *Store, st *State, n int, check flipChecks) uint64 {
	t.Helper()
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		r := st.Ranges[1]
		to := map[string]string{"s2": "s1", "s1": "s2"}[r.Shard]
		m := newMigration(t, s, fmt.Sprintf("m%d", i), r, to)
		if err := s.Freeze(ctx, st, 0, m); err != nil {
			t.Fatal(err)
		}
		if check.frozen != nil {
			check.frozen(i, m, to)
		}
		if err := s.Flip(ctx, st, 0, m, to); err != nil {
			t.Fatal(err)
		}
		if check.flipped != nil {
			check.flipped(i, m, to)
		}
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(n)
}

// clusterStore is a store on a 3-member etcd whose members the test kills and restarts.
func clusterStore(t *testing.T) (*etcdserver.Cluster, *Store) {
	t.Helper()
	c, cli := testenv.EtcdCluster(t, 3)
	s, err := NewStore(cli, "demo")
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// schedulerLeader campaigns for the scheduler's leadership with a 5-second lease and
// fails t unless it wins; the caller resigns.
func schedulerLeader(t *testing.T, ctx context.Context, s *Store) *Leader {
	t.Helper()
	l, err := s.Campaign(ctx, "scheduler", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// loadValid loads the catalog and fails t unless it is valid.
func loadValid(t *testing.T, ctx context.Context, s *Store) *State {
	t.Helper()
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateState(st); err != nil {
		t.Fatal(err)
	}
	return st
}
