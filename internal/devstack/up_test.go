package devstack

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpRefusesBadInputChangingNothing: bad flags, a folder that holds a stack or anything
// else, and ports out of range are refused before anything is made.
func TestUpRefusesBadInputChangingNothing(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "precious.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	stack := filepath.Join(dir, "stack")
	if err := os.MkdirAll(stack, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeState(&State{Cluster: Cluster, Dir: stack}); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "fresh")
	for _, tt := range []struct {
		name string
		o    UpOptions
		want string
	}{
		{"no shards", UpOptions{Dir: fresh, Shards: 0, Scale: 1}, "--shards 0: use 1 to 16"},
		{"too many shards", UpOptions{Dir: fresh, Shards: 17, Scale: 1}, "--shards 17"},
		{"no data", UpOptions{Dir: fresh, Shards: 2, Scale: 0}, "--scale 0"},
		{"empty dir", UpOptions{Dir: "", Shards: 2, Scale: 1}, "--dir is empty"},
		{"unknown distribution", UpOptions{Dir: fresh, Shards: 2, Scale: 1, Distribution: "md5"}, `--distribution "md5": use range (bigint tenant ids) or hash (uuid tenant ids)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Up(context.Background(), tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Up: %v, want %q", err, tt.want)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Errorf("%s was created", fresh)
			}
		})
	}
	if err := refuseFolder(stack, "stack"); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Errorf("a stack's folder: %v", err)
	}
	if err := refuseFolder(foreign, "foreign"); err == nil || !strings.Contains(err.Error(), "is not a dev stack") {
		t.Errorf("a foreign folder: %v", err)
	}
	if _, err := ports(2, 80); err == nil || !strings.Contains(err.Error(), "--base-port 80: use 1024 to") {
		t.Errorf("base port 80: %v", err)
	}
}

// TestPortsAreDistinctAndNamed: free ports are distinct, shards first then etcd's client
// and peer port, and each has a name for messages.
func TestPortsAreDistinctAndNamed(t *testing.T) {
	ps, err := ports(3, 0)
	if err != nil || len(ps) != 5 {
		t.Fatalf("ports: %v, %v", ps, err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] {
			t.Errorf("port %d twice in %v", p, ps)
		}
		seen[p] = true
	}
	for i, want := range []string{"shard s1", "shard s2", "shard s3", "etcd client", "etcd peer"} {
		if got := portRole(i, 3); got != want {
			t.Errorf("portRole(%d) = %q, want %q", i, got, want)
		}
	}
}
