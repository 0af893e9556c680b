package devstack

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusOfAStoppedStack: a stack whose clusters and etcd do not run is reported part
// by part as stopped, not up, and Err says to take it down and up again.
func TestStatusOfAStoppedStack(t *testing.T) {
	dir := t.TempDir()
	st := &State{Cluster: Cluster, Dir: dir, Ready: true,
		Shards: []Shard{{Name: "s1", Dir: filepath.Join(dir, "shards", "s1"), Port: 1}, {Name: "s2", Dir: filepath.Join(dir, "shards", "s2"), Port: 2}},
		Etcd:   Etcd{Dir: filepath.Join(dir, "etcd"), Endpoint: "127.0.0.1:3", PID: 1<<22 + 7}}
	if err := writeState(st); err != nil {
		t.Fatal(err)
	}
	rep, err := Status(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Up || rep.Etcd.Running || len(rep.Shards) != 2 || rep.Shards[1].Name != "s2" || rep.Shards[0].Running {
		t.Errorf("status %+v", rep)
	}
	if err := rep.Err("stack"); err == nil || !strings.Contains(err.Error(), "is not fully up: run `reshard dev down --dir stack`") {
		t.Errorf("Err = %v", err)
	}
	if _, err := Status(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "no dev stack in") {
		t.Errorf("status of nothing: %v", err)
	}
}
