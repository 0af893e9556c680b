package devstack

import (
	"context"
	"strings"
	"testing"
)

// readyStack writes the state of a stack that is up, whose shards nothing here reaches.
func readyStack(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	st := &State{Cluster: Cluster, Dir: dir, Ready: true, Shards: []Shard{{Name: "s1", DSN: "host=one"}, {Name: "s2", DSN: "host=two"}},
		Data: DataState{Tenants: 20, Scale: 0.1, Seed: 1, Now: 1_700_000_000}}
	if err := writeState(st); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLoadRefusesBadFlags: a negative --quiet and an unknown --route are refused before
// any write, with what to give instead.
func TestLoadRefusesBadFlags(t *testing.T) {
	dir := readyStack(t)
	for _, tt := range []struct {
		o    LoadOptions
		want string
	}{
		{LoadOptions{Dir: dir, Quiet: -1, Route: RouteStatic}, "--quiet -1: use 0 (none) or N"},
		{LoadOptions{Dir: dir, Route: "bogus"}, `--route "bogus": use auto, catalog or static`},
	} {
		if _, err := Load(context.Background(), tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%+v) = %v, want %q", tt.o, err, tt.want)
		}
	}
}
