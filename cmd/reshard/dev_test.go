package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/devstack"
	"github.com/reshard/reshard/internal/pgcluster"
	"github.com/reshard/reshard/internal/testenv"
)

// These tests drive the real binary: `dev up` re-executes itself to run etcd in a detached
// process, which a test calling run() in-process could not do honestly.

// buildReshard builds this command into a temporary folder (with the race detector when
// the tests run with it, so the build reuses the test's compiled packages).
func buildReshard(t *testing.T) string {
	t.Helper()
	testenv.Integration(t)
	if _, err := pgcluster.BinDir(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "reshard")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	start := time.Now()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out, err := exec.Command(goBin, append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	// The binary's temporary files (pgcluster's initdb template) go next to it, so they
	// go with the test even when a test kills `dev up` before it removes them.
	if err := os.Mkdir(filepath.Join(filepath.Dir(bin), "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	openToPostgres(t, filepath.Dir(bin))
	return bin
}

// binEnv is the environment of the binary built at bin.
func binEnv(bin string) []string {
	return append(os.Environ(), "TMPDIR="+filepath.Join(filepath.Dir(bin), "tmp"))
}

// openToPostgres lets the postgres user (servers run as it when we are root) reach dir,
// a folder made by t.TempDir, whose two levels are private.
func openToPostgres(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// stackDir is a folder for a dev stack that the postgres user can reach.
func stackDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	openToPostgres(t, d)
	return filepath.Join(d, "stack")
}

type binResult struct {
	stdout, stderr string
	code           int
}

func runReshard(t *testing.T, bin string, args ...string) binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = binEnv(bin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	r := binResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	t.Logf("$ reshard %s -> exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// downAtCleanup makes sure no process of the stack outlives the test, whatever happened.
func devDownAtCleanup(t *testing.T, bin, dir string) {
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err == nil {
			cmd := exec.Command(bin, "dev", "down", "--dir", dir)
			cmd.Env = binEnv(bin)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Logf("cleanup: dev down: %v\n%s", err, out)
			}
		}
	})
}

// stackPIDs returns the pids of the stack's postmasters and of its etcd process.
func devStackPIDs(t *testing.T, st *devstack.State) []int {
	t.Helper()
	var pids []int
	for _, s := range st.Shards {
		b, err := os.ReadFile(filepath.Join(s.Dir, "data", "postmaster.pid"))
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return append(pids, st.Etcd.PID)
}

func devStackPorts(st *devstack.State) []int {
	ports := []int{st.Etcd.ClientPort, st.Etcd.PeerPort}
	for _, s := range st.Shards {
		ports = append(ports, s.Port)
	}
	return ports
}

func assertStackGone(t *testing.T, dir string, pids, ports []int) {
	t.Helper()
	for _, pid := range pids {
		if devstack.ProcessAlive(pid) {
			t.Errorf("process %d still runs after dev down", pid)
		}
	}
	for _, p := range ports {
		if !pgcluster.PortFree(p) {
			t.Errorf("port %d still open after dev down", p)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after dev down (%v)", dir, err)
	}
}

func TestDevUpDown(t *testing.T) {
	bin := buildReshard(t)
	dir := stackDir(t)
	devDownAtCleanup(t, bin, dir)
	ctx := context.Background()

	r := runReshard(t, bin, "dev", "up", "--shards", "2", "--tenants", "40", "--scale", "0.1", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "dev stack up") || !strings.Contains(r.stdout, "export RESHARD_ETCD=") {
		t.Fatalf("dev up: exit %d", r.code)
	}
	st, err := devstack.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || len(st.Shards) != 2 {
		t.Fatalf("state: %+v", st)
	}

	// psql's view: every shard has the demo tables with data, configured for logical
	// replication, and only tenants it owns.
	for _, s := range st.Shards {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		var walLevel string
		var tenants, orders, items, ledger, events, parts int64
		err = conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
			(SELECT count(*) FROM tenants), (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
			(SELECT count(*) FROM ledger), (SELECT count(*) FROM events),
			(SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass)`).
			Scan(&walLevel, &tenants, &orders, &items, &ledger, &events, &parts)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		t.Logf("%s: %d tenants, %d orders, %d items, %d ledger, %d events in %d partitions", s.Name, tenants, orders, items, ledger, events, parts)
		if walLevel != "logical" || tenants == 0 || orders == 0 || items == 0 || ledger == 0 || events == 0 || parts != demo.DataDays+demo.AheadDays+1 {
			t.Errorf("%s: wal_level %s, %d tenants, %d orders, %d items, %d ledger, %d events, %d partitions",
				s.Name, walLevel, tenants, orders, items, ledger, events, parts)
		}
		if err := demo.CheckBalances(ctx, conn); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		conn.Close(ctx)
	}
	yaml, err := os.ReadFile(filepath.Join(dir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster: demo", "key: tenant_id", "tables: [tenants, orders, order_items, ledger, events]",
		st.Shards[1].DSN, "interval: day, premake: 7, retention: 30d"} {
		if !bytes.Contains(yaml, []byte(want)) {
			t.Errorf("cluster.yaml lacks %q:\n%s", want, yaml)
		}
	}

	// The etcd client reaches the etcd the stack started.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{st.Etcd.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := cli.Put(ectx, "/reshard-test/hello", "world"); err != nil {
		t.Fatalf("etcd put: %v", err)
	}
	if resp, err := cli.Get(ectx, "/reshard-test/hello"); err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "world" {
		t.Fatalf("etcd get: %v %v", resp, err)
	}
	cancel()
	cli.Close()

	if r := runReshard(t, bin, "dev", "status", "--dir", dir); r.code != 0 || !strings.Contains(r.stdout, "running") {
		t.Errorf("dev status: exit %d", r.code)
	}

	// Twice: a polite refusal that changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, devstack.StateFile))
	pids := devStackPIDs(t, st)
	r = runReshard(t, bin, "dev", "up", "--shards", "2", "--dir", dir)
	if r.code == 0 || !strings.Contains(r.stderr, "already up") || !strings.Contains(r.stderr, "dev down") {
		t.Errorf("second dev up: exit %d, want a non-zero exit saying already up", r.code)
	}
	after, _ := os.ReadFile(filepath.Join(dir, devstack.StateFile))
	if !bytes.Equal(before, after) {
		t.Error("second dev up changed the state file")
	}
	for _, pid := range pids {
		if !devstack.ProcessAlive(pid) {
			t.Errorf("process %d died after the second dev up", pid)
		}
	}

	// A short load through the binary keeps every invariant, routed by the ranges the
	// stack was made with, then by the catalog once it is written; `dev check` finds every
	// tenant's rows as they should be against the fingerprint taken before.
	if r := runReshard(t, bin, "dev", "check", "--dir", dir); r.code == 0 || !strings.Contains(r.stderr, "dev check --save") {
		t.Errorf("dev check without a fingerprint: exit %d, want a refusal saying to take one", r.code)
	}
	if r := runReshard(t, bin, "dev", "check", "--save", "--dir", dir); r.code != 0 || !strings.Contains(r.stdout, "fingerprint of every tenant's rows taken") {
		t.Fatalf("dev check --save: exit %d", r.code)
	}
	for _, route := range []string{"the ranges the stack was created with", "the catalog"} {
		if route == "the catalog" {
			devInitCatalog(t, st)
		}
		r = runReshard(t, bin, "dev", "load", "--dir", dir, "--duration", "2s", "--workers", "2", "--quiet", "3", "-o", "json")
		var lr demo.Result
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &lr) != nil || lr.Acked == 0 || lr.Failed != 0 {
			t.Errorf("dev load: exit %d, %+v", r.code, lr.Counters)
		}
		if !strings.Contains(r.stderr, "routed by "+route) {
			t.Errorf("dev load was not routed by %s", route)
		}
	}
	r = runReshard(t, bin, "dev", "check", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "owners from the catalog, 2 load(s)") || !strings.Contains(r.stdout, "ok: every tenant's rows are what they should be") {
		t.Errorf("dev check after the loads: exit %d", r.code)
	}
	for _, s := range st.Shards {
		if !strings.Contains(r.stdout, "  "+s.Name+": ") || strings.Contains(r.stdout, "(0 quiet)") {
			t.Errorf("dev check does not report quiet tenants checked on %s", s.Name)
		}
	}
	// A quiet tenant's event vanishes behind everyone's back: the check names it.
	opts, _ := st.Data.Options()
	tenants, _ := demo.GenerateTenants(opts)
	quiet := demo.QuietTenants(tenants, 3, demo.DefaultHot)
	var victim int64
	for id := range quiet {
		victim = id
		break
	}
	ranges := catalog.EvenRanges([]string{st.Shards[0].Name, st.Shards[1].Name})
	owner, _ := (&catalog.State{Ranges: ranges}).Owner(victim)
	conn, err := pgx.Connect(ctx, st.Shards[st.ShardIndex(owner.Shard)].DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM events WHERE (tenant_id, id, created_at) IN (SELECT tenant_id, id, created_at FROM events WHERE tenant_id = $1 LIMIT 1)`, victim); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	r = runReshard(t, bin, "dev", "check", "--dir", dir)
	if want := fmt.Sprintf("tenant %d (quiet): events on %s: ", victim, owner.Shard); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("dev check after a quiet tenant lost an event: exit %d, want 1 and %q", r.code, want)
	}
	for _, s := range st.Shards {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			t.Fatal(err)
		}
		if err := demo.CheckBalances(ctx, conn); err != nil {
			t.Errorf("%s after load: %v", s.Name, err)
		}
		conn.Close(ctx)
	}

	r = runReshard(t, bin, "dev", "down", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("dev down: exit %d", r.code)
	}
	assertStackGone(t, dir, pids, devStackPorts(st))
	if r := runReshard(t, bin, "dev", "down", "--dir", dir); r.code != 0 {
		t.Errorf("dev down of nothing: exit %d, want 0", r.code)
	}
	if r := runReshard(t, bin, "dev", "status", "--dir", dir); r.code == 0 {
		t.Error("dev status of nothing: exit 0, want an error")
	}
}

// freeRun returns the first port of n consecutive free ports whose offset-th port is held
// by a listener the test closes at cleanup.
func devFreePortRun(t *testing.T, n, offset int) (base int) {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held := l.Addr().(*net.TCPAddr).Port
		base = held - offset
		ok := base >= 1024 && base+n-1 <= 65535
		for p := base; ok && p < base+n; p++ {
			if p != held && !pgcluster.PortFree(p) {
				ok = false
			}
		}
		if ok {
			t.Cleanup(func() { l.Close() })
			return base
		}
		l.Close()
	}
	t.Fatal("no run of free ports found")
	return 0
}

func TestDevUpPortInUse(t *testing.T) {
	bin := buildReshard(t)
	cases := []struct {
		name   string
		offset int // which port of the stack is taken
		role   string
	}{
		{"shard", 1, "shard s2"},
		{"etcd client", 2, "etcd client"},
		{"etcd peer", 3, "etcd peer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := devFreePortRun(t, 4, tc.offset)
			dir := stackDir(t)
			devDownAtCleanup(t, bin, dir)
			r := runReshard(t, bin, "dev", "up", "--shards", "2", "--base-port", strconv.Itoa(base), "--dir", dir)
			taken := fmt.Sprintf("port 127.0.0.1:%d (%s) is in use", base+tc.offset, tc.role)
			if r.code == 0 || !strings.Contains(r.stderr, taken) {
				t.Fatalf("exit %d, want an error saying %q", r.code, taken)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("want one line of error, got:\n%s", r.stderr)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was left behind", dir)
			}
			for p := base; p < base+4; p++ {
				if p != base+tc.offset && !pgcluster.PortFree(p) {
					t.Errorf("port %d is in use after the failed dev up", p)
				}
			}
		})
	}
}

// TestDevDownHalfStarted kills `dev up` once its first cluster runs, and when interrupted
// (SIGINT) at the same point: either way nothing may be left once `dev down` has run (the
// interrupted one cleans up by itself).
func TestDevDownHalfStarted(t *testing.T) {
	bin := buildReshard(t)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := stackDir(t)
			devDownAtCleanup(t, bin, dir)
			cmd := exec.Command(bin, "dev", "up", "--shards", "2", "--scale", "3", "--dir", dir)
			cmd.Env = binEnv(bin)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until a postmaster and etcd run, then interrupt.
			deadline := time.Now().Add(2 * time.Minute)
			var st *devstack.State
			for {
				s, err := devstack.ReadState(dir)
				if err == nil && s.Etcd.PID > 0 {
					if _, err := os.Stat(filepath.Join(s.Shards[0].Dir, "data", "postmaster.pid")); err == nil {
						st = s
						break
					}
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("dev up did not get to a running cluster:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			pids := []int{st.Etcd.PID}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			t.Logf("dev up after %s: %v\n%s", sig, err, out.String())
			if err == nil {
				t.Skip("dev up finished before the signal: nothing half-started to test")
			}
			if sig == syscall.SIGINT {
				// It stopped and removed what it had started.
				assertStackGone(t, dir, pids, devStackPorts(st))
				return
			}
			// Killed: the folder and processes remain until dev down, which must handle it.
			if r := runReshard(t, bin, "dev", "up", "--dir", dir); r.code == 0 || !strings.Contains(r.stderr, "already up") {
				t.Errorf("dev up over a half-started stack: exit %d, want already up", r.code)
			}
			for _, s := range st.Shards {
				if b, err := os.ReadFile(filepath.Join(s.Dir, "data", "postmaster.pid")); err == nil {
					if pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0]); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			if r := runReshard(t, bin, "dev", "down", "--dir", dir); r.code != 0 {
				t.Fatalf("dev down of a half-started stack: exit %d", r.code)
			}
			assertStackGone(t, dir, pids, devStackPorts(st))
		})
	}
}

func TestDevRefusesForeignFolders(t *testing.T) {
	bin := buildReshard(t)
	dir := t.TempDir()
	keep := filepath.Join(dir, "precious.txt")
	if err := os.WriteFile(keep, []byte("not a dev stack"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runReshard(t, bin, "dev", "down", "--dir", dir); r.code == 0 || !strings.Contains(r.stderr, "does not look like a dev stack") {
		t.Errorf("dev down of a foreign folder: exit %d", r.code)
	}
	if r := runReshard(t, bin, "dev", "up", "--dir", dir); r.code == 0 || !strings.Contains(r.stderr, "not a dev stack") {
		t.Errorf("dev up into a foreign folder: exit %d", r.code)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the foreign folder was touched: %v", err)
	}
	for _, args := range [][]string{
		{"dev", "up", "--shards", "0", "--dir", filepath.Join(dir, "x")},
		{"dev", "up", "--scale", "-1", "--dir", filepath.Join(dir, "x")},
		{"dev", "up", "--base-port", "80", "--dir", filepath.Join(dir, "x")},
	} {
		if r := runReshard(t, bin, args...); r.code == 0 {
			t.Errorf("%v: exit 0, want a refusal", args)
		}
		if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
			t.Errorf("%v created its folder", args)
		}
	}
}

// initCatalog writes the catalog cluster.yaml describes, as `reshard init -f` would.
func devInitCatalog(t *testing.T, st *devstack.State) {
	t.Helper()
	ctx := context.Background()
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{st.Etcd.Endpoint}}, st.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var shards []catalog.Shard
	for _, s := range st.Shards {
		shards = append(shards, catalog.Shard{Name: s.Name, DSN: s.DSN})
	}
	if err := store.Init(ctx, catalog.Config{Cluster: st.Cluster, Key: demo.Key, Tables: demo.Tables}, shards, nil, false); err != nil {
		t.Fatal(err)
	}
}
