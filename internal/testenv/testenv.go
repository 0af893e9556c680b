package testenv

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/internal/pgcluster"
)

// PG is one started cluster with a database named "app".
type PG struct {
	*pgcluster.Cluster
	t testing.TB
}

// DSNApp is the DSN of the "app" database.
func (p *PG) DSNApp() string { return p.DSN("app") }

// Pool opens a pool on the app database, closed at cleanup.
func (p *PG) Pool(ctx context.Context) *pgxpool.Pool {
	p.t.Helper()
	pool, err := pgxpool.New(ctx, p.DSNApp())
	if err != nil {
		p.t.Fatalf("testenv: pool: %v", err)
	}
	p.t.Cleanup(pool.Close)
	return pool
}

// Exec runs SQL statements on the app database and fails the test on error.
func (p *PG) Exec(ctx context.Context, sql string, args ...any) {
	p.t.Helper()
	conn, err := pgx.Connect(ctx, p.DSNApp())
	if err != nil {
		p.t.Fatalf("testenv: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		p.t.Fatalf("testenv: exec %q: %v", sql, err)
	}
}

// Integration marks t as an integration test: skipped under -short, otherwise run.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}

// Postgres starts n clusters in parallel, each with an empty "app" database, and registers
// their teardown.
func Postgres(t testing.TB, n int) []*PG {
	t.Helper()
	Integration(t)
	if _, err := pgcluster.BinDir(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base, err := os.MkdirTemp("", "reshard-test-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(base, 0o755)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	out := make([]*PG, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *pgcluster.Cluster
			for attempt := 0; attempt < 3; attempt++ {
				c, errs[i] = pgcluster.Create(ctx, filepath.Join(base, "pg"+string(rune('0'+i))+"-"+itoa(attempt)), pgcluster.Options{})
				if errs[i] != nil {
					return
				}
				// A free port can be taken between FreePort and start: retry on another.
				if errs[i] = c.Start(ctx); errs[i] == nil {
					break
				}
			}
			if errs[i] != nil {
				return
			}
			out[i] = &PG{Cluster: c, t: t}
			errs[i] = createDB(ctx, c.DSN("postgres"), "app")
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, p := range out {
			if p != nil {
				if err := p.Destroy(ctx); err != nil {
					t.Logf("testenv: stop %s: %v", p.Dir, err)
				}
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("testenv: cluster %d: %v", i, err)
		}
	}
	for _, p := range out {
		t.Logf("testenv: PostgreSQL started on 127.0.0.1:%d (%s)", p.Port, p.Dir)
	}
	return out
}

func createDB(ctx context.Context, dsn, name string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// Etcd starts an embedded etcd and returns it with a connected client; both are closed at
// cleanup.
func Etcd(t testing.TB) (*etcdserver.Server, *clientv3.Client) {
	t.Helper()
	Integration(t)
	dir, err := os.MkdirTemp("", "reshard-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := etcdserver.Start(ctx, dir, etcdserver.Options{})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("testenv: %v", err)
	}
	cli := connect(t, clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 5 * time.Second}, srv.Close, dir)
	t.Logf("testenv: etcd started on %s", srv.Endpoint())
	return srv, cli
}

// EtcdCluster starts an n-member etcd (embedded members, see etcdserver.Cluster) and returns
// it with a client that lists every member's endpoint, as a production client does; both
// are closed at cleanup. Tests kill and restart members through the cluster.
func EtcdCluster(t testing.TB, n int) (*etcdserver.Cluster, *clientv3.Client) {
	t.Helper()
	Integration(t)
	dir, err := os.MkdirTemp("", "reshard-etcd-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := etcdserver.StartCluster(ctx, dir, n, etcdserver.Options{})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("testenv: %v", err)
	}
	cli := connect(t, clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}, c.Close, dir)
	t.Logf("testenv: %d-member etcd started on %v", n, c.Endpoints())
	return c, cli
}

// connect opens the tests' client on a started etcd and closes it, the server (closeServer)
// and the server's directory at cleanup, or at once when the client cannot be made.
func connect(t testing.TB, cfg clientv3.Config, closeServer func(), dir string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		closeServer()
		os.RemoveAll(dir)
		t.Fatalf("testenv: etcd client: %v", err)
	}
	t.Cleanup(func() {
		cli.Close()
		closeServer()
		os.RemoveAll(dir)
	})
	return cli
}

// WaitErr waits up to within for the error a goroutine sends on ch: a non-nil one fails t,
// and so does none in time, with timeout as the message.
func WaitErr(t testing.TB, ch <-chan error, within time.Duration, timeout string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(within):
		t.Fatal(timeout)
	}
}

// Repeat runs body(g, i) in n goroutines g = 0..n-1, each with i = 0, 1, 2, ... until
// stop is called or its body returns false: a load that runs beside what a test checks.
// stop returns once every goroutine has ended.
func Repeat(n int, body func(g, i int) bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				if !body(g, i) {
					return
				}
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

func itoa(i int) string { return string(rune('0' + i)) }
