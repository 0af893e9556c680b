package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestExportImportRoundTrip(t *testing.T) {
	s, cli, st, m := demoMove(t)
	ctx := context.Background()
	// Its copy plan is stored beside it (copyplan.go), and is part of a backup.
	m.Copy = syntheticPlan(300)
	plan := m.Copy.Clone()
	if err := s.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.Freeze(ctx, st, 0, m); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStats(ctx, &Stats{Shards: map[string]ShardStats{"s1": {Shard: "s1", Bytes: 10}},
		Ranges: []RangeStats{{Range: st.Ranges[0].Range, Shard: "s1", Bytes: 10}}, HotKeys: []HotKey{{Key: -5, Shard: "s1", Bytes: 10}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHotKeyCustom(ctx, 7, map[string]float64{"read_qps": 12}); err != nil {
		t.Fatal(err)
	}
	// The partition scheduler's last run is part of a backup too.
	leader := schedulerLeader(t, ctx, s)
	if err := s.PutPartitionRun(ctx, leader, sampleRun("host pid 1", 2, 1)); err != nil {
		t.Fatal(err)
	}
	_ = leader.Resign(ctx)
	// A lock lives under the prefix too, and is not part of a backup.
	if _, err := cli.Put(ctx, "/reshard/demo/locks/migrations/mv1/abc", ""); err != nil {
		t.Fatal(err)
	}
	data, err := s.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "locks/") {
		t.Error("export holds a lock key")
	}
	if err := s.Import(ctx, data, false); !errors.Is(err, ErrExists) {
		t.Fatalf("import over a catalog without force = %v, want ErrExists", err)
	}
	before, _ := s.Load(ctx)
	statsBefore, _ := s.LoadStats(ctx)
	histBefore, _ := s.History(ctx, 0)

	// Restore into an empty etcd.
	s2, cli2 := testStore(t)
	if err := s2.Import(ctx, data, false); err != nil {
		t.Fatal(err)
	}
	after, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before.Revision, after.Revision = 0, 0
	if a, b := mustJSON(t, before), mustJSON(t, after); a != b {
		t.Errorf("state differs after round trip:\n%s\n%s", a, b)
	}
	statsAfter, _ := s2.LoadStats(ctx)
	statsBefore.Revision, statsAfter.Revision = 0, 0
	if a, b := mustJSON(t, statsBefore), mustJSON(t, statsAfter); a != b {
		t.Errorf("stats differ:\n%s\n%s", a, b)
	}
	runBefore, _ := s.LastPartitionRun(ctx)
	runAfter, err := s2.LastPartitionRun(ctx)
	if err != nil || runAfter == nil || mustJSON(t, runBefore) != mustJSON(t, runAfter) {
		t.Errorf("partition run after round trip = %v, %v; want %v", runAfter, err, runBefore)
	}
	histAfter, _ := s2.History(ctx, 0)
	if len(histAfter) != len(histBefore)+1 || histAfter[len(histAfter)-1].Kind != EventImport {
		t.Fatalf("history after import: %d events, want %d + import", len(histAfter), len(histBefore))
	}
	// The restored journal can be advanced: its revision is the new store's.
	after, _ = s2.Load(ctx)
	mm := after.Migrations["mv1"]
	if err := s2.Flip(ctx, after, 0, &mm, "s3"); err != nil {
		t.Fatalf("flip after import: %v", err)
	}
	if got, err := s2.GetMigration(ctx, "mv1"); err != nil || !reflect.DeepEqual(got.Copy, plan) {
		t.Fatalf("the copy plan after import and flip: %v", err)
	}
	// Export of the restored catalog, imported with --force over the original, gives it back.
	data2, err := s2.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, data2, true); err != nil {
		t.Fatal(err)
	}
	back, _ := s.Load(ctx)
	if r, _ := back.Owner(1); r.Shard != "s3" || r.Epoch != 2 {
		t.Errorf("forced import: %+v", r)
	}
	if resp, _ := cli.Get(ctx, "/reshard/demo/locks/", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 1 {
		t.Error("forced import removed a lock")
	}
	_ = cli2
}

func TestImportRejectsBadFiles(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	good := func() map[string]any {
		return map[string]any{
			"format": ExportFormat, "cluster": "demo", "revision": 1, "exported": time.Now(),
			"keys": map[string]any{
				"config":                          demoConfig(),
				"shards/s1":                       Shard{Name: "s1", DSN: "host=h", State: ShardActive},
				"ranges/" + KeyHex(math.MinInt64): Range{Range: Full, Shard: "s1", State: RangeServing, Epoch: 1},
			},
		}
	}
	mutate := map[string]func(map[string]any){
		"format":  func(m map[string]any) { m["format"] = "x" },
		"cluster": func(m map[string]any) { m["cluster"] = "other" },
		"gap":     func(m map[string]any) { delete(m["keys"].(map[string]any), "ranges/"+KeyHex(math.MinInt64)) },
		"bad key": func(m map[string]any) { m["keys"].(map[string]any)["bogus"] = 1 },
		"wrong range": func(m map[string]any) {
			m["keys"].(map[string]any)["ranges/"+KeyHex(5)] = Range{Range: Full, Shard: "s1"}
		},
		"no config": func(m map[string]any) { delete(m["keys"].(map[string]any), "config") },
	}
	for name, f := range mutate {
		t.Run(name, func(t *testing.T) {
			m := good()
			f(m)
			b, _ := json.Marshal(m)
			if err := s.Import(ctx, b, true); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Import = %v, want ErrInvalid", err)
			}
			resp, _ := cli.Get(ctx, "/reshard/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if resp.Count != 0 {
				t.Fatalf("a bad import wrote %d keys", resp.Count)
			}
		})
	}
	if err := s.Import(ctx, []byte("{not json"), true); !errors.Is(err, ErrInvalid) {
		t.Errorf("garbage: %v", err)
	}
	b, _ := json.Marshal(good())
	if err := s.Import(ctx, b, false); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

// A catalog bigger than one transaction is written in batches, config last.
func TestInitBatched(t *testing.T) {
	s, _ := testStore(t, WithMaxTxnOps(8))
	ctx := context.Background()
	var ranges []Range
	lo := int64(math.MinInt64)
	for i := range 30 {
		r := Range{Range: KeyRange{Lo: lo, Hi: int64(i * 10)}, Shard: "s1"}
		if i == 29 {
			r.Range = From(lo)
		}
		ranges = append(ranges, r)
		lo = int64(i * 10)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s1"), ranges, false); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil || len(st.Ranges) != 30 {
		t.Fatalf("Load: %d ranges, %v", len(st.Ranges), err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s2"), nil, true); err != nil {
		t.Fatal(err)
	}
	st, err = s.Load(ctx)
	if err != nil || len(st.Ranges) != 1 || len(st.Shards) != 1 {
		t.Fatalf("after forced batched init: %d ranges %d shards, %v", len(st.Ranges), len(st.Shards), err)
	}
	data, err := s.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, data, true); err != nil {
		t.Fatal(err)
	}
}

// TestImportKeepsOnlyThePagesARecordReads: an import restores the copy plan pages that
// the record of an unended migration references, and no others: an ended migration's
// record (from an export made before ended migrations lost their pages) is restored with
// its plan spent and without its pages, and pages no record references (a write that lost
// its compare-and-swap, a migration that is gone) are left out.
func TestImportKeepsOnlyThePagesARecordReads(t *testing.T) {
	ctx := context.Background()
	s, _, st, m := demoMove(t)
	m.Copy = syntheticPlan(300)
	plan := m.Copy.Clone()
	ended := newMigration(t, s, "mv2", st.Ranges[2], "s1")
	ended.Copy, ended.RowsCopied = syntheticPlan(200), 200
	for _, mm := range []*Migration{m, ended} {
		if err := s.PutMigration(ctx, mm); err != nil {
			t.Fatal(err)
		}
	}
	ex := exportOf(t, s)
	var old Migration
	if err := json.Unmarshal(ex.Keys["migrations/mv2"], &old); err != nil {
		t.Fatal(err)
	}
	old.Phase = PhaseDone // as a store that kept an ended migration's pages left it
	ex.Keys["migrations/mv2"] = json.RawMessage(mustJSON(t, old))
	ex.Keys["copyplans/mv1/0123456789abcdef"] = json.RawMessage(`[]`)
	ex.Keys["copyplans/gone/0123456789abcdef"] = json.RawMessage(`[]`)
	b, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}

	s2, cli2 := testStore(t)
	if err := s2.Import(ctx, b, false); err != nil {
		t.Fatal(err)
	}
	readPlan(t, s2, "mv1", plan)
	if n, refs := pageKeys(t, s2, cli2, ""), len(pageRefs(rawRecord(t, s2, cli2, "mv1"))); n != int64(refs) {
		t.Errorf("%d keys under copyplans/ after the import, want mv1's %d pages only", n, refs)
	}
	ended.Phase = PhaseDone
	checkSpentPlan(t, s2, cli2, ended)
}
