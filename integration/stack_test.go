package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/migrate/migratetest"
	"github.com/reshard/reshard/mover"
)

const cluster = "it"

// stack is a running fleet: shards with the demo schema and data, and a catalog.
type stack struct {
	t       testing.TB
	pgs     []*testenv.PG
	srv     *etcdserver.Server
	cli     *clientv3.Client
	store   *catalog.Store
	tenants []demo.Tenant
	dsn     map[string]string
	conns   map[string]*pgx.Conn
	// quiet tenants the load never writes to; before is every shard's fingerprint of
	// every tenant's rows, taken before any load or move (check compares with it).
	quiet  map[int64]bool
	before demo.Snapshot
	// cols are the tables' columns when before was taken: check compares over them, so a
	// column a test adds during a move (and checks on its own) does not count as a change.
	cols demo.Columns

	etcdDir   string
	etcdPorts [2]int // client, peer
	// etcd is the replicated etcd of a stack made by newStackOn with several members
	// (srv is nil then).
	etcd *etcdserver.Cluster
}

// newStack takes a testing.TB so that the cutover benchmark measures the same fleet the
// tests check.
func newStack(t testing.TB, shards int, opts demo.DataOptions) *stack {
	t.Helper()
	return newStackOn(t, shards, opts, 1)
}

// newStackOn is newStack over an etcd of members members: more than one is a replicated
// etcd (testenv.EtcdCluster) whose members the test kills and restarts through s.etcd.
func newStackOn(t testing.TB, shards int, opts demo.DataOptions, members int) *stack {
	t.Helper()
	ctx := context.Background()
	s := &stack{t: t, dsn: map[string]string{}, conns: map[string]*pgx.Conn{}}
	s.pgs = testenv.Postgres(t, shards)
	if members > 1 {
		s.etcd, s.cli = testenv.EtcdCluster(t, members)
	} else {
		s.startEtcd()
	}
	store, err := catalog.NewStore(s.cli, cluster)
	if err != nil {
		t.Fatal(err)
	}
	s.store = store
	names := make([]string, shards)
	var cshards []catalog.Shard
	for i, p := range s.pgs {
		names[i] = fmt.Sprintf("s%d", i+1)
		s.dsn[names[i]] = p.DSNApp()
		cshards = append(cshards, catalog.Shard{Name: names[i], DSN: p.DSNApp()})
		c, err := pgx.Connect(ctx, p.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		s.conns[names[i]] = c
		if err := demo.CreateSchema(ctx, c, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	ranges := catalog.EvenRanges(names)
	if opts.HotRange.Empty() || (opts.HotRange == catalog.KeyRange{}) {
		opts.HotRange = ranges[0].Range
	}
	if s.tenants, err = demo.GenerateTenants(opts); err != nil {
		t.Fatal(err)
	}
	placed, err := demo.Place(s.tenants, ranges)
	if err != nil {
		t.Fatal(err)
	}
	for name, ts := range placed {
		if _, err := demo.LoadShard(ctx, s.conns[name], ts, opts); err != nil {
			t.Fatal(err)
		}
	}
	cfg := catalog.Config{Cluster: cluster, Key: demo.Key, Tables: demo.Tables}
	if err := store.Init(ctx, cfg, cshards, ranges, false); err != nil {
		t.Fatal(err)
	}
	// Every third tenant in key order stays quiet (not the four busiest, which the tests
	// move on their own), so every shard and every moved range of a few tenants holds
	// tenants whose rows must come out exactly as they went in.
	s.quiet = demo.QuietTenants(s.tenants, 3, 4)
	for name, ts := range placed {
		n := 0
		for _, tn := range ts {
			if s.quiet[tn.ID] {
				n++
			}
		}
		if n == 0 && len(ts) > 4 {
			t.Fatalf("shard %s holds no quiet tenant among its %d", name, len(ts))
		}
	}
	if s.cols, err = demo.TableColumns(ctx, s.conns[names[0]], demo.Tables); err != nil {
		t.Fatal(err)
	}
	if s.before, err = demo.TakeSnapshotColumns(ctx, s.queriers(), demo.Tables, s.cols); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) queriers() map[string]demo.Querier {
	return migratetest.Queriers(s.conns)
}

// quietIn counts the tenants in r, and the quiet ones among them.
func (s *stack) quietIn(r catalog.KeyRange) (quiet, all int) {
	for _, tn := range s.tenants {
		if r.Contains(tn.ID) {
			all++
			if s.quiet[tn.ID] {
				quiet++
			}
		}
	}
	return quiet, all
}

// startEtcd starts the stack's etcd on fixed ports and a folder kept across restarts,
// so a test can stop it mid-cutover and bring the same cluster back.
func (s *stack) startEtcd() {
	t := s.t
	t.Helper()
	testenv.Integration(t)
	if s.etcdDir == "" {
		dir, err := os.MkdirTemp("", "reshard-it-etcd-")
		if err != nil {
			t.Fatal(err)
		}
		s.etcdDir = dir
		t.Cleanup(func() {
			if s.cli != nil {
				s.cli.Close()
			}
			if s.srv != nil {
				s.srv.Close()
			}
			os.RemoveAll(dir)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdserver.Start(ctx, s.etcdDir, etcdserver.Options{ClientPort: s.etcdPorts[0], PeerPort: s.etcdPorts[1]})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	t.Logf("testenv: etcd started on %s (%s)", srv.Endpoint(), s.etcdDir)
	if s.etcdPorts[0] == 0 {
		_, p, _ := strings.Cut(srv.Endpoint(), ":")
		s.etcdPorts[0], _ = strconv.Atoi(p)
		s.etcdPorts[1] = srv.PeerPort()
	}
	if s.cli == nil {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		s.cli = cli
	}
}

// reconnect replaces the test's own connection to a shard (after a restart).
func (s *stack) reconnect(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, s.dsn[name])
	if err != nil {
		return err
	}
	old := s.conns[name]
	s.conns[name] = c
	s.t.Cleanup(func() { c.Close(context.Background()) })
	old.Close(ctx)
	return nil
}

// stopEtcd stops the stack's etcd; startEtcd brings it back with the same data.
func (s *stack) stopEtcd() {
	s.srv.Close()
	s.srv = nil
}

// executor builds the executor behind `reshard move` with the real mover.
func (s *stack) executor(opts migrate.ExecOptions) *migrate.Executor {
	return moveExecutor(s.t, s.store, mover.Config{Key: demo.Key, Tables: demo.Tables}, opts, slog.LevelInfo)
}

// moveExecutor is the executor behind `reshard move` with the real mover (2 workers, 6
// connections) moving the tables keyed as keyed says, under a 5-second lease lock, logging
// at level and above to t.
func moveExecutor(t testing.TB, store *catalog.Store, keyed mover.Config, opts migrate.ExecOptions, level slog.Level) *migrate.Executor {
	return &migrate.Executor{
		Catalog: store,
		DSN:     catalog.Shard.ConnString,
		Lock: func(ctx context.Context, id string) (*catalog.Lock, error) {
			return store.TryLockMigration(ctx, id, catalog.WithTTL(5))
		},
		NewMover: func(m *catalog.Migration, src, dst string, j *migrate.Journal, token int64) (migrate.Mover, error) {
			cfg := keyed
			cfg.ID, cfg.SourceDSN, cfg.TargetDSN, cfg.Range, cfg.Token = m.ID, src, dst, m.Range, token
			cfg.Workers, cfg.MaxConnections = 2, 6
			return mover.New(cfg, j)
		},
		Options: opts,
		Log:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})),
	}
}

// testWriter sends the executor's log to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var errFrozen = errors.New("range frozen")

// resolverRouter asks the catalog resolver where a tenant lives on every transaction. It
// does not wait for a frozen range: it reports it, and the load retries, so writes also
// meet the fence (a client whose watch lags sees serving and writes to the old shard).
func (s *stack) resolverRouter(ctx context.Context) (demo.Router, func()) {
	cache, err := s.store.Watch(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	res := catalog.NewResolver(cache)
	return demo.RouterFunc(func(_ context.Context, tenant int64) (string, error) {
		rt, err := res.Resolve(tenant)
		if err != nil {
			return "", err
		}
		if rt.State == catalog.RangeFrozen {
			return "", fmt.Errorf("tenant %d: %w", tenant, errFrozen)
		}
		return s.dsn[rt.Shard], nil
	}), cache.Close
}

// runLoad starts the demo write load through the resolver: workers goroutines, rate
// transactions per second (0: as fast as they go). stop ends it, fails the test if the load
// itself failed, logs what it did and returns its result.
func (s *stack) runLoad(workers int, rate float64, seed uint64) (stop func() *demo.Result) {
	ctx := context.Background()
	router, closeRouter := s.resolverRouter(ctx)
	loader, err := demo.NewLoader(demo.LoadOptions{Tenants: s.tenants, Router: router, Workers: workers, Rate: rate, RetryIf: retryIf, Seed: seed, Quiet: s.quiet})
	if err != nil {
		closeRouter()
		s.t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	var (
		res  *demo.Result
		lerr error
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, lerr = loader.Run(lctx)
	}()
	return func() *demo.Result {
		cancel()
		wg.Wait()
		closeRouter()
		if lerr != nil {
			s.t.Fatalf("load: %v", lerr)
		}
		s.t.Logf("load: %d acknowledged, %d fenced and retried, %d transient retries, %d failed, %d unknown",
			res.Acked, res.Fenced, res.Transient, res.Failed, res.Unknown)
		return res
	}
}

// carve gives r a catalog range of its own (split off its owner's range), as a move of r needs.
func (s *stack) carve(r catalog.KeyRange) {
	s.t.Helper()
	if _, err := migrate.Carve(context.Background(), s.store, r); err != nil {
		s.t.Fatalf("carve %s: %v", r, err)
	}
}

// catalogNow loads the catalog as it is now, failing the test or benchmark if it cannot.
func (s *stack) catalogNow(ctx context.Context) *catalog.State {
	s.t.Helper()
	st, err := s.store.Load(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// tenantRange carves tenant i of the data set into a range of its own and returns the
// tenant, its range and the shard that owns it.
func (s *stack) tenantRange(i int) (int64, catalog.KeyRange, string) {
	s.t.Helper()
	tenant := s.tenants[i].ID
	r := catalog.NewRange(tenant, tenant+1)
	s.carve(r)
	st := s.catalogNow(context.Background())
	from, _ := st.Owner(tenant)
	return tenant, r, from.Shard
}

// smallStack is the stack most scenarios start from: two shards of 20 tenants at scale
// 0.05 (a few thousand rows), generated from seed.
func smallStack(t *testing.T, seed uint64) *stack {
	t.Helper()
	return newStack(t, 2, demo.DataOptions{Tenants: 20, Scale: 0.05, Seed: seed})
}

// tenantMove is the move most scenarios make on a two-shard stack: tenant i carved into a
// range of its own (tenantRange), the shard that owns it and the other one, its target.
func (s *stack) tenantMove(i int) (tenant int64, r catalog.KeyRange, from, to string) {
	s.t.Helper()
	tenant, r, from = s.tenantRange(i)
	return tenant, r, from, other(from)
}

// wantServing fails t unless tenant's range serves from shard.
func (s *stack) wantServing(t *testing.T, tenant int64, shard string) {
	t.Helper()
	st := s.catalogNow(context.Background())
	if cur, _ := st.Owner(tenant); cur.Shard != shard || cur.State != catalog.RangeServing {
		t.Fatalf("tenant %d: owner %+v, want %s serving", tenant, cur, shard)
	}
}

// other is the other shard of a two-shard stack.
func other(shard string) string { return map[string]string{"s1": "s2", "s2": "s1"}[shard] }

func retryIf(err error) bool { return cutover.IsFenceError(err) || errors.Is(err, errFrozen) }

// check verifies the end state: a valid catalog with every range serving, balances equal
// their ledgers on every shard, every acknowledged ledger write present exactly once on
// its owner and nowhere else, every tenant's rows on its owner only and as they should be
// (checkTenants), and no reshard slot or publication left anywhere. res is the load's
// result (nil: no load ran). It returns the catalog it checked.
func (s *stack) check(ctx context.Context, res *demo.Result) *catalog.State {
	t := s.t
	t.Helper()
	st := migratetest.Catalog(t, ctx, s.store)
	for name, c := range s.conns {
		if err := demo.CheckBalances(ctx, c); err != nil {
			t.Errorf("shard %s: %v", name, err)
		}
	}
	migratetest.NoReplicationLeft(t, ctx, s.conns)
	s.checkTenants(ctx, st, res)
	return st
}

// checkTenants fingerprints every tenant's rows on every shard and compares them with the
// fingerprint taken before the load and the moves: a tenant's rows are on its owner and
// nowhere else; a tenant no acknowledged write touched (the quiet ones at least) has
// exactly its starting rows, count and hash of every table; a written tenant has its
// starting count plus the net change of its acknowledged transactions (unless one of its
// transactions has an unknown outcome). It also checks that every acknowledged ledger row
// is on its owner exactly once.
func (s *stack) checkTenants(ctx context.Context, st *catalog.State, res *demo.Result) {
	t := s.t
	t.Helper()
	owner := func(tenant int64) string { r, _ := st.Owner(tenant); return r.Shard }
	var ch *demo.Changes
	var acked []demo.LedgerWrite
	if res != nil {
		ch, acked = res.Changes, res.Ledger
	}
	rep, err := demo.CheckTenantsColumns(ctx, s.queriers(), demo.Tables, s.cols, s.before, owner, ch)
	if rep != nil {
		var b strings.Builder
		rep.Print(&b)
		t.Logf("every tenant's rows checked:\n%s", b.String())
	}
	if err != nil {
		t.Error(err)
	}
	if err := demo.CheckAcked(ctx, s.queriers(), owner, acked, false); err != nil {
		t.Error(err)
	}
}
