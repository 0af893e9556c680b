package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// TestPlanRefusesBadFlags: a bad --max-bytes or --strategy is one line naming the flag
// and what to write, exit 1, before the catalog is read (etcd here does not answer).
func TestPlanRefusesBadFlags(t *testing.T) {
	etcd := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-bytes", "lots"}, `reshard: --max-bytes "lots": write a size such as 50GiB, 500MB or 2000000000`},
		{[]string{"--max-bytes", "-1"}, `reshard: --max-bytes "-1": write a size such as 50GiB, 500MB or 2000000000`},
		{[]string{"--strategy", "random"}, `reshard: invalid planner options: strategy "random": use size, writes or balanced`},
	} {
		res := runCLI(t, context.Background(), append([]string{"--etcd", etcd, "plan"}, tt.args...)...)
		if res.code != 1 || !strings.HasPrefix(res.stderr, tt.want) || strings.Count(res.stderr, "\n") != 1 || strings.Contains(res.stderr, "etcd") {
			t.Errorf("plan %v: exit %d, stderr %q; want exit 1 and one line starting %q", tt.args, res.code, res.stderr, tt.want)
		}
	}
}

// TestPlanCommand runs `reshard plan` against a real etcd holding a skewed catalog: the plan
// file records the revisions the store read, --detailed-exitcode exits 2, and a balanced
// catalog says there is nothing to do.
func TestPlanCommand(t *testing.T) {
	ctx := context.Background()
	shards := []catalog.Shard{{Name: "s1", DSN: "host=one dbname=app"}, {Name: "s2", DSN: "host=two dbname=app"}, {Name: "s3", DSN: "host=three dbname=app"}}
	ranges := []catalog.Range{
		{Range: catalog.Below(1000), Shard: "s1"},
		{Range: catalog.NewRange(1000, 2000), Shard: "s2"},
		{Range: catalog.From(2000), Shard: "s3"},
	}
	env := newCatalog(t, ctx, catalog.Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"orders"}}, shards, ranges)
	putStats := func(b1, b2, b3 int64, hot []catalog.HotKey) {
		t.Helper()
		st := &catalog.Stats{Shards: map[string]catalog.ShardStats{}, HotKeys: hot}
		for i, b := range []int64{b1, b2, b3} {
			st.Ranges = append(st.Ranges, catalog.RangeStats{Range: ranges[i].Range, Shard: ranges[i].Shard, Bytes: b, WritesPerSec: float64(b) / 100})
		}
		if err := env.store.PutStats(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	plan := cliRunner(t, ctx, append(env.global, "plan")...)

	putStats(6000, 1000, 1000, []catalog.HotKey{{Key: 42, Shard: "s1", Bytes: 2500, WritesPerSec: 25}, {Key: 7, Shard: "s1", Bytes: 100, WritesPerSec: 1}})
	file := filepath.Join(t.TempDir(), "plan.json")
	res := plan("--out", file, "--detailed-exitcode")
	if res.code != 2 {
		t.Fatalf("want exit code 2 for a plan with steps, got %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{"tenant 42", "move", "lower bound", "reshard apply " + file} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output has no %q:\n%s", want, res.stdout)
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
	st, err := env.store.Load(ctx)
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

	res = plan("-o", "json")
	if res.code != 0 {
		t.Fatal(res.stderr)
	}
	if _, err := planner.Parse([]byte(res.stdout)); err != nil {
		t.Fatalf("-o json is not a plan: %v\n%s", err, res.stdout)
	}

	putStats(1000, 1050, 980, nil)
	res = plan("--detailed-exitcode")
	if res.code != 0 {
		t.Fatalf("balanced catalog: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stdout, "nothing to do: every shard is within 10% of the mean") {
		t.Fatalf("balanced catalog:\n%s", res.stdout)
	}

	if res := plan("--threshold", "2", "--strategy", "fast"); res.code == 0 || !strings.Contains(res.stderr, "threshold 2") || !strings.Contains(res.stderr, `"fast"`) {
		t.Fatalf("bad flags: exit %d %s", res.code, res.stderr)
	}
}
