package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/devstack"
	"github.com/reshard/reshard/planner"
)

// TestDevHashStackMovesUnderLoad: `dev up --distribution hash` makes a demo of uuid tenant
// ids on three real shards split evenly over the hash line (each shard holds exactly the
// tenants whose uuid_hash_extended its range holds), cluster.yaml says `distribution: hash`,
// init takes it, and under a live `dev load` routed by the catalog, `stats collect` (naming
// hot tenants by uuid beside their hash), `plan` and `apply` move at least one range; `dev
// check` then finds every tenant's rows, moved or not, on its owner only, the untouched ones
// exactly as fingerprinted, the written ones at their start plus their acknowledged changes,
// and every acknowledged ledger row once.
func TestDevHashStackMovesUnderLoad(t *testing.T) {
	bin := buildReshard(t)
	dir := stackDir(t)
	devDownAtCleanup(t, bin, dir)
	ctx := context.Background()

	if r := runReshard(t, bin, "dev", "up", "--distribution", "md5", "--dir", dir); r.code == 0 || !strings.Contains(r.stderr, `--distribution "md5": use range`) {
		t.Fatalf("dev up --distribution md5: exit %d, want a refusal", r.code)
	}
	r := runReshard(t, bin, "dev", "up", "--distribution", "hash", "--shards", "3", "--tenants", "40", "--scale", "0.1", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("dev up --distribution hash: exit %d", r.code)
	}
	st, err := devstack.ReadState(dir)
	if err != nil || !st.Data.Hashed() {
		t.Fatalf("state: %+v, %v", st, err)
	}
	yaml, _ := os.ReadFile(filepath.Join(dir, "cluster.yaml"))
	if !bytes.Contains(yaml, []byte("\ndistribution: hash")) {
		t.Fatalf("cluster.yaml does not say distribution: hash:\n%s", yaml)
	}
	ranges := catalog.EvenRanges([]string{"s1", "s2", "s3"})
	for i, s := range st.Shards {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			t.Fatal(err)
		}
		var typ string
		var tenants, outside int64
		err = conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'tenant_id'`).Scan(&typ)
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT `+ranges[i].Range.SQL("uuid_hash_extended(tenant_id, 0)")+`) FROM tenants`).Scan(&tenants, &outside)
		}
		conn.Close(ctx)
		if err != nil || typ != "uuid" || tenants == 0 || outside != 0 {
			t.Fatalf("%s: tenant_id %s, %d tenants, %d hashing outside %s (%v)", s.Name, typ, tenants, outside, ranges[i].Range, err)
		}
	}

	global := []string{"--etcd", st.Etcd.Endpoint, "--cluster", st.Cluster}
	run := func(args ...string) binResult {
		t.Helper()
		return runReshard(t, bin, append(slices.Clone(global), args...)...)
	}
	if r := run("init", "-f", filepath.Join(dir, "cluster.yaml")); r.code != 0 {
		t.Fatalf("init: exit %d", r.code)
	}
	if r := run("catalog", "show"); r.code != 0 || !strings.Contains(r.stdout, "of type uuid, distribution hash") {
		t.Errorf("catalog show: exit %d, want the uuid keyspace by hash", r.code)
	}
	if r := runReshard(t, bin, "dev", "status", "--dir", dir); r.code != 0 {
		t.Errorf("dev status: exit %d", r.code)
	}
	if r := runReshard(t, bin, "dev", "check", "--save", "--dir", dir); r.code != 0 {
		t.Fatalf("dev check --save: exit %d", r.code)
	}

	stopLoad := startDevLoad(t, bin, dir)
	if r := run("stats", "collect", "--sample-writes", "3s"); r.code != 0 {
		t.Fatalf("stats collect: exit %d", r.code)
	} else if !hotTenantNamedRE.MatchString(r.stdout) {
		t.Errorf("stats collect names no hot tenant by its uuid beside its hash:\n%s", r.stdout)
	}
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if r := run("plan", "--out", planFile, "--max-moves", "2", "--detailed-exitcode"); r.code != 2 {
		t.Fatalf("plan: exit %d, want 2 (changes proposed)", r.code)
	}
	var p planner.Plan
	if b, err := os.ReadFile(planFile); err != nil || json.Unmarshal(b, &p) != nil || p.Moves == 0 {
		t.Fatalf("plan %s: %v, %+v", planFile, err, p)
	}
	if r := run("apply", planFile, "--auto-approve"); r.code != 0 {
		t.Fatalf("apply: exit %d", r.code)
	}
	load := stopLoad()
	if !strings.Contains(load, " 0 failed") || strings.Contains(load, "load: 0 transactions") {
		t.Errorf("the load failed transactions or acknowledged none:\n%s", load)
	}

	r = runReshard(t, bin, "dev", "check", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "owners from the catalog, 1 load(s)") || !strings.Contains(r.stdout, "ok: every tenant's rows are what they should be") {
		t.Fatalf("dev check after the moves: exit %d", r.code)
	}
	cat := run("catalog", "show", "-o", "json")
	var after catalog.State
	if err := json.Unmarshal([]byte(cat.stdout), &after); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, rg := range after.Ranges {
		for _, home := range ranges {
			if home.Range.Covers(rg.Range) && home.Shard != rg.Shard {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Errorf("no range left its first shard: %v", after.Ranges)
	}
}

// hotTenantNamedRE is a hot key line of `stats show` under hash: the uuid, then its hash.
var hotTenantNamedRE = regexp.MustCompile(`(?m)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} \(hash -?[0-9]+\) `)

// startDevLoad runs `reshard dev load` (every third tenant quiet, routed by the catalog)
// until the returned function interrupts it, as Ctrl-C does, and returns what it printed.
func startDevLoad(t *testing.T, bin, dir string) func() string {
	t.Helper()
	cmd := exec.Command(bin, "dev", "load", "--dir", dir, "--duration", "0", "--workers", "2", "--quiet", "3")
	cmd.Env = binEnv(bin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("dev load: %v", err)
				}
			case <-time.After(3 * time.Minute):
				_ = cmd.Process.Kill()
				t.Error("dev load did not stop within 3 minutes of an interrupt")
			}
			t.Logf("$ reshard dev load ...\n%s", out.String())
		}
		return out.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}
