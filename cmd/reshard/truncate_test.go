package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

// TestTruncateDuringMoveShowsInStatus: a TRUNCATE of a partition of a moved table on the
// source, while `reshard move` catches up, stops the move: `reshard status` shows the
// journal's last error naming the partition and saying to cancel and start again, the move
// exits 1 with it and rolls back, and every tenant's rows on both shards are what they
// should be (the target's copy gone, nothing else touched but the truncated partition).
func TestTruncateDuringMoveShowsInStatus(t *testing.T) {
	bin := buildReshard(t)
	env, pgs := moveFleet(t, "trunc")
	ctx := testContext(t, 4*time.Minute)
	before := map[string]map[string]string{}
	for name, pg := range pgs {
		before[name] = tenantEntries(shardState(t, ctx, pg))
	}

	hold := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "--etcd", env.etcd, "--cluster", "trunc", "move", "--id", "mt", "--range", "5:10", "--to", "s2")
	cmd.Env = append(binEnv(bin), "RESHARD_TEST_HOLD=catch-up", "RESHARD_TEST_HOLD_FILE="+hold)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	var log strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "reshard-test: holding after catch-up") {
				close(held)
			}
		}
	}()
	select {
	case <-held:
	case <-logDone:
		t.Fatalf("the move ended before its cutover:\n%s", log.String())
	case <-ctx.Done():
		t.Fatal("the move never caught up")
	}

	pgs["s1"].Exec(ctx, `TRUNCATE events_p2025`)
	var m *catalog.Migration
	for deadline := time.Now().Add(2 * time.Minute); m == nil || !strings.Contains(m.LastError, "TRUNCATE"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the journal never said why the catch-up stopped: %+v", m)
		}
		if m, err = env.store.GetMigration(ctx, "mt"); err != nil {
			t.Fatal(err)
		}
	}
	res := runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "trunc", "status")
	for _, w := range []string{"mt: last error: ", "TRUNCATE of public.events_p2025 (partition of public.events)", "reshard cancel mt", "start the move again"} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, res.stdout)
		}
	}
	t.Logf("status:\n%s", res.stdout)

	os.Remove(hold)
	<-logDone
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(log.String(), "TRUNCATE of public.events_p2025") {
		t.Fatalf("move: %v, want exit 1 naming the partition:\n%s", err, log.String())
	}
	res = runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "trunc", "status", "mt", "-o", "json")
	var st struct{ Migrations []moveReport }
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || len(st.Migrations) != 1 ||
		st.Migrations[0].Phase != catalog.PhaseRolledBack || !strings.Contains(st.Migrations[0].LastError, "TRUNCATE of public.events_p2025") {
		t.Errorf("status mt -o json: %v\n%s", err, res.stdout)
	}

	// s1 lost its events (the TRUNCATE did that), nothing else; s2 is as it was.
	for name, pg := range pgs {
		got := tenantEntries(shardState(t, ctx, pg))
		for k, v := range before[name] {
			if strings.HasPrefix(k, "events/") && name == "s1" {
				v = ""
			}
			if got[k] != v {
				t.Errorf("%s: tenant rows %s = %q, want %q", name, k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := before[name][k]; !ok {
				t.Errorf("%s: unexpected rows %s = %q", name, k, v)
			}
		}
	}
	if objs := shardState(t, ctx, pgs["s1"]); strings.Contains(objs, "slot ") || strings.Contains(objs, "publication ") || strings.Contains(objs, "reshard_truncate") {
		t.Errorf("s1 keeps reshard objects after the rollback: %s", objs)
	}
}
