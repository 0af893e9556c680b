package devstack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDownTouchesOnlyStacks: nothing to stop is not an error; a folder with neither a state
// file nor an etcd pid file is refused and kept; a stack whose processes are gone is
// removed.
func TestDownTouchesOnlyStacks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, existed, err := Down(ctx, filepath.Join(dir, "none")); err != nil || existed {
		t.Errorf("no folder: existed %v, %v", existed, err)
	}
	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Down(ctx, foreign); err == nil || !strings.Contains(err.Error(), "does not look like a dev stack") {
		t.Errorf("foreign folder: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("the foreign folder was removed: %v", err)
	}
	stopped := filepath.Join(dir, "stopped")
	if err := os.MkdirAll(filepath.Join(stopped, "shards", "s1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeState(&State{Cluster: Cluster, Dir: stopped, Shards: []Shard{{Name: "s1", Dir: filepath.Join(stopped, "shards", "s1")}}}); err != nil {
		t.Fatal(err)
	}
	if _, existed, err := Down(ctx, stopped); err != nil || !existed {
		t.Errorf("stopped stack: existed %v, %v", existed, err)
	}
	if _, err := os.Stat(stopped); !os.IsNotExist(err) {
		t.Errorf("the stopped stack's folder is still there: %v", err)
	}
}

// TestIsStackEtcdNeverTakesAnotherProcess: a pid is the stack's etcd only if its command
// line is EtcdCommand for that folder (this test process is not), and a dead pid is none.
func TestIsStackEtcdNeverTakesAnotherProcess(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	if isStackEtcd(os.Getpid(), t.TempDir()) {
		t.Error("the test process was taken for a stack's etcd")
	}
	if ProcessAlive(1<<22+7) || isStackEtcd(1<<22+7, t.TempDir()) {
		t.Error("a pid that does not exist is alive")
	}
}
