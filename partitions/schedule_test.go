package partitions_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/partitions"
)

// records collects run records from every scheduler, in order.
type records struct {
	mu   sync.Mutex
	runs []catalog.PartitionRun
}

func (r *records) PutPartitionRun(_ context.Context, _ *catalog.Leader, rec catalog.PartitionRun) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, rec)
	return nil
}

func (r *records) snapshot() []catalog.PartitionRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]catalog.PartitionRun(nil), r.runs...)
}

// TestTwoSchedulersOneActs runs two schedulers against a real etcd and two real shards:
// only the elected one acts; when it stops (SIGTERM), the other takes over.
func TestTwoSchedulersOneActs(t *testing.T) {
	pgs := testenv.Postgres(t, 2)
	srv, _ := testenv.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var shards []catalog.Shard
	for i, pg := range pgs {
		pg.Exec(ctx, eventsDDL("events", "timestamptz"))
		shards = append(shards, catalog.Shard{Name: []string{"s1", "s2"}[i], DSN: pg.DSNApp()})
	}
	store := func(holder string) *catalog.Store {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		s, err := catalog.NewStore(cli, "sched", catalog.WithHolder(holder))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cfg := catalog.Config{Cluster: "sched", Key: "tenant_id", Tables: []string{"events"},
		Partitions: []catalog.PartitionSpec{daily("events", 3, "", "")}}
	if err := store("init").Init(ctx, cfg, shards, nil, false); err != nil {
		t.Fatal(err)
	}

	rec := &records{}
	type sched struct {
		cancel context.CancelFunc
		done   chan error
	}
	start := func(holder string) sched {
		sctx, scancel := context.WithCancel(ctx)
		s := &partitions.Scheduler{Catalog: store(holder), Connect: connectShard, Recorder: rec, Every: 200 * time.Millisecond,
			Holder: holder, TTL: 5, Now: func() time.Time { return fakeNow }, Log: slog.New(slog.NewTextHandler(t.Output(), nil)).With("holder", holder)}
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx) }()
		return sched{scancel, done}
	}
	a := start("a")
	b := start("b")
	waitFor(t, "five runs", func() bool { return len(rec.snapshot()) >= 5 })
	runs := rec.snapshot()
	first := runs[0].Holder
	for _, r := range runs {
		if r.Holder != first {
			t.Fatalf("runs by %s and %s while both were up: only the leader may act", first, r.Holder)
		}
	}
	r0 := runs[0]
	if r0.Outcome != "ok" || r0.Created != 8 || r0.MinRunway != 3 || len(r0.Shards) != 2 {
		t.Errorf("first run: %+v; want ok, 4 partitions created on each of 2 shards, runway 3", r0)
	}
	if runs[1].Created != 0 || runs[1].Outcome != "ok" {
		t.Errorf("second run created %d (%s), want 0: maintenance is idempotent", runs[1].Created, runs[1].Outcome)
	}
	for _, pg := range pgs {
		var n int
		if err := pg.Pool(ctx).QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass`).Scan(&n); err != nil || n != 4 {
			t.Errorf("shard on port %d has %d partitions (%v), want 4", pg.Port, n, err)
		}
	}

	// Stop the leader as SIGTERM would: it returns promptly and resigns, and the other
	// scheduler takes over without waiting for the lease.
	leader, other := a, b
	if first == "b" {
		leader, other = b, a
	}
	stopped := time.Now()
	leader.cancel()
	select {
	case err := <-leader.done:
		if err != nil {
			t.Errorf("stopped scheduler returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not stop within 10s of its context ending")
	}
	n := len(rec.snapshot())
	waitFor(t, "the other scheduler to act", func() bool {
		rs := rec.snapshot()
		return len(rs) > n && rs[len(rs)-1].Holder != first
	})
	t.Logf("takeover after the leader stopped: %v", time.Since(stopped))
	for _, r := range rec.snapshot()[n:] {
		if r.Holder == first {
			t.Errorf("the stopped scheduler %s still recorded a run", first)
		}
	}
	other.cancel()
	if err := <-other.done; err != nil {
		t.Errorf("second scheduler returned %v", err)
	}
}
