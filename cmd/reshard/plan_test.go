package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/planner"
)

func TestParsePlanBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"", 0, false},
		{"2000000000", 2000000000, false},
		{"50GiB", 50 << 30, false},
		{"1.5 KiB", 1536, false},
		{"500MB", 500e6, false},
		{"7b", 7, false},
		{"-1", 0, true},
		{"lots", 0, true},
		{"1e30", 0, true},
	}
	for _, tt := range tests {
		got, err := parsePlanBytes(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parsePlanBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestPlanCommand runs `reshard plan` against a real etcd holding a skewed catalog: the plan
// file records the revisions the store read, --detailed-exitcode exits 2, and a balanced
// catalog says there is nothing to do.
func TestPlanCommand(t *testing.T) {
	srv, cli := testenv.Etcd(t)
	ctx := context.Background()
	store, err := catalog.NewStore(cli, "demo")
	if err != nil {
		t.Fatal(err)
	}
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSN: "host=two dbname=app"}, {Name: "s3", DSN: "host=three dbname=app"}}
	ranges := []catalog.Range{
		{Range: catalog.Below(1000), Shard: "s1"},
		{Range: catalog.NewRange(1000, 2000), Shard: "s2"},
		{Range: catalog.From(2000), Shard: "s3"},
	}
	if err := store.Init(ctx, catalog.Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"orders"}}, shards, ranges, false); err != nil {
		t.Fatal(err)
	}
	putStats := func(b1, b2, b3 int64, hot []catalog.HotKey) {
		t.Helper()
		st := &catalog.Stats{Shards: map[string]catalog.ShardStats{}, HotKeys: hot}
		for i, b := range []int64{b1, b2, b3} {
			st.Ranges = append(st.Ranges, catalog.RangeStats{Range: ranges[i].Range, Shard: ranges[i].Shard, Bytes: b, WritesPerSec: float64(b) / 100})
		}
		if err := store.PutStats(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	plan := func(args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		root := newRootCmd()
		root.SetOut(&out)
		root.SetArgs(append([]string{"--etcd", srv.Endpoint(), "--cluster", "demo", "plan"}, args...))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}

	putStats(6000, 1000, 1000, []catalog.HotKey{{Key: 42, Shard: "s1", Bytes: 2500, WritesPerSec: 25}, {Key: 7, Shard: "s1", Bytes: 100, WritesPerSec: 1}})
	file := filepath.Join(t.TempDir(), "plan.json")
	out, err := plan("--out", file, "--detailed-exitcode")
	var ec exitCodeError
	if !errors.As(err, &ec) || ec.code != 2 {
		t.Fatalf("want exit code 2 for a plan with steps, got %v\n%s", err, out)
	}
	for _, want := range []string{"tenant 42", "move", "lower bound", "reshard apply " + file} {
		if !strings.Contains(out, want) {
			t.Errorf("output has no %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planner.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cluster != "demo" || p.Revision == 0 || p.Revision > st.Revision || len(p.Ranges) == 0 {
		t.Fatalf("plan cluster %q revision %d (catalog at %d), ranges %+v", p.Cluster, p.Revision, st.Revision, p.Ranges)
	}
	for _, rr := range p.Ranges {
		if rr.ModRevision == 0 || rr.ModRevision != st.ModRev[rr.Key] {
			t.Fatalf("range %s recorded at %q rev %d, the store has %d", rr.Range, rr.Key, rr.ModRevision, st.ModRev[rr.Key])
		}
	}

	jsonOut, err := plan("-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := planner.Parse([]byte(jsonOut)); err != nil {
		t.Fatalf("-o json is not a plan: %v\n%s", err, jsonOut)
	}

	putStats(1000, 1050, 980, nil)
	out, err = plan("--detailed-exitcode")
	if err != nil {
		t.Fatalf("balanced catalog: %v\n%s", err, out)
	}
	if !strings.Contains(out, "nothing to do: every shard is within 10% of the mean") {
		t.Fatalf("balanced catalog:\n%s", out)
	}

	if _, err := plan("--threshold", "2", "--strategy", "fast"); err == nil || !strings.Contains(err.Error(), "threshold 2") || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("bad flags: %v", err)
	}
}
