package devstack

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateRoundTripAndDamage: a written state reads back the same; a missing one is
// os.ErrNotExist; a damaged one says to run dev down; an empty --dir is refused.
func TestStateRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadState(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no state: %v, want ErrNotExist", err)
	}
	st := &State{Cluster: Cluster, Dir: dir, Shards: []Shard{{Name: "s1", Port: 5001}, {Name: "s2", Port: 5002}}, Data: DataState{Tenants: 10, Scale: 1, HotRange: ":100"}}
	if err := writeState(st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil || got.Shards[1].Port != 5002 || got.ShardIndex("s2") != 1 || got.ShardIndex("s9") != -1 {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if o, err := got.Data.Options(); err != nil || o.Tenants != 10 || o.HotRange.String() != ":100" {
		t.Errorf("data options %+v, %v", o, err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), "dev down") {
		t.Errorf("damaged state: %v", err)
	}
	if _, err := AbsDir("  "); err == nil || !strings.Contains(err.Error(), "--dir is empty") {
		t.Errorf("empty --dir: %v", err)
	}
}

// TestReadyStateRefusesAStackThatIsNotUp: load, check and check --save refuse a folder
// without a stack, and a stack that did not finish starting, saying what to do.
func TestReadyStateRefusesAStackThatIsNotUp(t *testing.T) {
	dir := t.TempDir()
	if _, err := readyState(dir); err == nil || !strings.Contains(err.Error(), "start one with `reshard dev up`") {
		t.Errorf("no stack: %v", err)
	}
	if err := writeState(&State{Cluster: Cluster, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := readyState(dir); err == nil || !strings.Contains(err.Error(), "did not finish starting") {
		t.Errorf("half-started stack: %v", err)
	}
}
