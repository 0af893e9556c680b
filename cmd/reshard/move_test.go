package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// TestRefusedMoveChangesNothing: bad input to move, split --to and apply is refused with
// one clear line and exit 1 before anything is written: the etcd revision and every
// shard's rows and reshard objects are unchanged. A good move then goes through.
func TestRefusedMoveChangesNothing(t *testing.T) {
	env, pgs := moveFleet(t, "refuse")
	ctx := testContext(t, 4*time.Minute)
	run := env.runner(t, ctx)
	// s2 holds a stray row of tenant 7, which lives on s1.
	pgs["s2"].Exec(ctx, `INSERT INTO orders VALUES (7, 99999, 'stray')`)
	// An unfinished migration of 1500:1600 (its journal only).
	live, _ := json.Marshal(catalog.Migration{ID: "m_live", Kind: "move", Range: catalog.NewRange(1500, 1600), Source: "s2", Target: "s1", Phase: catalog.PhaseCatchingUp})
	if _, err := env.cli.Put(ctx, "/reshard/refuse/"+catalog.MigrationKey("m_live"), string(live)); err != nil {
		t.Fatal(err)
	}
	st, err := env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plan := func(to string) string {
		p := planner.Plan{Version: planner.FormatVersion, ID: "pbad" + to, Cluster: "refuse", Revision: st.Revision,
			Steps: []planner.Step{
				{N: 1, Kind: planner.StepSplit, Range: catalog.KeyRange{Lo: catalog.Full.Lo, Hi: 1000}, At: []int64{5},
					Parts: []catalog.KeyRange{{Lo: catalog.Full.Lo, Hi: 5}, catalog.NewRange(5, 1000)}, From: "s1"},
				{N: 2, Kind: planner.StepMove, Range: catalog.NewRange(5, 1000), From: "s1", To: to},
			},
			Ranges: []planner.RangeRevision{{Range: catalog.KeyRange{Lo: catalog.Full.Lo, Hi: 1000}, Key: catalog.RangeKey(catalog.Full.Lo),
				ModRevision: st.ModRev[catalog.RangeKey(catalog.Full.Lo)]}},
			Moves: 1, Splits: 1}
		b, _ := json.Marshal(p)
		return writeFile(t, t.TempDir(), "plan.json", string(b))
	}
	cases := []struct {
		name string
		args []string
		want []string
		prep func()
		undo func()
	}{
		{"unknown target", []string{"move", "--range", "5:10", "--to", "s9"}, []string{`unknown target shard "s9"`, "s1, s2, s3"}, nil, nil},
		{"target is the owner", []string{"move", "--range", "5:10", "--to", "s1"}, []string{"range 5:10 is on s1: the range is already on that shard"}, nil, nil},
		{"range spans two ranges", []string{"move", "--range", "900:1100", "--to", "s2"}, []string{"spans several catalog ranges"}, nil, nil},
		{"range of an unfinished migration", []string{"move", "--range", "1550:1560", "--to", "s1"}, []string{"migration m_live", "catching_up"}, nil, nil},
		{"target holds rows of the range", []string{"move", "--range", "5:10", "--to", "s2"},
			[]string{"target: table orders already holds rows of range 5:10", "--overwrite", "nothing was changed"}, nil, nil},
		{"target unreachable", []string{"move", "--range", "5:10", "--to", "s3"}, []string{"target", "connect"}, nil, nil},
		{"source replica identity", []string{"move", "--range", "20:30", "--to", "s2"}, []string{"source:", "orders", "replica identity"},
			func() { pgs["s1"].Exec(ctx, `ALTER TABLE orders REPLICA IDENTITY NOTHING`) },
			func() { pgs["s1"].Exec(ctx, `ALTER TABLE orders REPLICA IDENTITY DEFAULT`) }},
		{"sequence missing on the target", []string{"move", "--range", "20:30", "--to", "s2"},
			[]string{"move of 20:30 from s1 to s2 refused (nothing was changed)", "target: sequence public.order_ids does not exist: create it as on the source (CREATE SEQUENCE public.order_ids AS bigint"},
			func() {
				pgs["s1"].Exec(ctx, `CREATE SEQUENCE order_ids; SELECT setval('order_ids', 5000); ALTER TABLE orders ALTER id SET DEFAULT nextval('order_ids')`)
			},
			func() { pgs["s1"].Exec(ctx, `ALTER TABLE orders ALTER id DROP DEFAULT; DROP SEQUENCE order_ids`) }},
		{"split to an unknown shard", []string{"split", "--range", ":1000", "--at", "500", "--to", "s9"}, []string{`unknown target shard "s9"`}, nil, nil},
		{"split to a target holding rows", []string{"split", "--range", ":1000", "--at", "5", "--to", "s2"},
			[]string{"target: table orders already holds rows of range 5:1000"}, nil, nil},
		{"apply moving to a target holding rows", []string{"apply", "--auto-approve", plan("s2")},
			[]string{"step 2", "target: table orders already holds rows of range 5:1000"}, nil, nil},
		{"apply moving to an unknown shard", []string{"apply", "--auto-approve", plan("s9")}, []string{"step 2", `unknown target shard "s9"`}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prep != nil {
				tc.prep()
				defer tc.undo()
			}
			rev := etcdRevision(t, env.cli)
			before := map[string]string{}
			for name, pg := range pgs {
				before[name] = shardState(t, ctx, pg)
			}
			res := run(tc.args...)
			if res.code != 1 {
				t.Errorf("exit %d, want 1\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n != 0 {
				t.Errorf("want one line, got %d:\n%s", n+1, res.stderr)
			}
			t.Logf("%s", strings.TrimSpace(res.stderr))
			if got := etcdRevision(t, env.cli); got != rev {
				t.Errorf("etcd revision %d -> %d: the refused command wrote to the catalog", rev, got)
			}
			for name, pg := range pgs {
				if after := shardState(t, ctx, pg); after != before[name] {
					t.Errorf("shard %s changed:\nbefore %s\nafter  %s", name, before[name], after)
				}
			}
		})
	}

	// A good move goes through: tenants 20..29 leave s1 for s2 with the same rows, every
	// other tenant's rows stay as they were on both shards.
	before := map[string]map[string]string{}
	for name, pg := range pgs {
		before[name] = tenantEntries(shardState(t, ctx, pg))
	}
	if res := run("move", "--range", "20:30", "--to", "s2"); res.code != 0 {
		t.Fatalf("a good move: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	moved := func(k string) bool { n, _ := strconv.Atoi(strings.SplitN(k, "/", 2)[1]); return n >= 20 && n < 30 }
	want := map[string]map[string]string{"s1": {}, "s2": {}}
	for k, v := range before["s1"] {
		if moved(k) {
			want["s2"][k] = v
		} else {
			want["s1"][k] = v
		}
	}
	for k, v := range before["s2"] {
		want["s2"][k] = v
	}
	for name, pg := range pgs {
		got := tenantEntries(shardState(t, ctx, pg))
		for k, v := range want[name] {
			if got[k] != v {
				t.Errorf("%s: tenant rows %s = %q, want %q", name, k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[name][k]; !ok {
				t.Errorf("%s: unexpected rows %s = %q", name, k, v)
			}
		}
	}
}

// TestMoveIDOfEndedMigration: `move --id` of a migration that was rolled back or cancelled
// exits 1 with the journal's reason and says to move again without --id (which works); of
// a done one it exits 0 and reports it (the range did move); of one that moves another
// range or to another shard it exits 1. apply refuses a plan whose move was rolled back.
func TestMoveIDOfEndedMigration(t *testing.T) {
	env, pgs := moveFleet(t, "ended")
	ctx := testContext(t, 4*time.Minute)
	run := env.runner(t, ctx)
	if res := run("move", "--id", "mdone", "--range", "5:10", "--to", "s2"); res.code != 0 {
		t.Fatalf("move: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, m := range []catalog.Migration{
		{ID: "mrb", Kind: catalog.KindMove, Range: catalog.NewRange(20, 30), Source: "s1", Target: "s2", Phase: catalog.PhaseRolledBack,
			LastError: "cutover mrb: verify: table orders differs: 100 rows on s1, 99 on s2"},
		{ID: "mcx", Kind: catalog.KindMove, Range: catalog.NewRange(30, 40), Source: "s1", Target: "s2", Phase: catalog.PhaseCancelled,
			LastError: "cancelled by the operator"},
	} {
		if err := env.store.PutMigration(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	st, err := env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := planner.Plan{Version: planner.FormatVersion, ID: "pended", Cluster: "ended", Revision: st.Revision,
		Steps: []planner.Step{{N: 1, Kind: planner.StepMove, Range: catalog.NewRange(40, 50), From: "s1", To: "s2"}}, Moves: 1}
	b, _ := json.Marshal(p)
	planFile := writeFile(t, t.TempDir(), "plan.json", string(b))
	if err := env.store.PutMigration(ctx, &catalog.Migration{ID: "pended_1", Kind: catalog.KindMove, Range: catalog.NewRange(40, 50),
		Source: "s1", Target: "s2", Phase: catalog.PhaseRolledBack, Plan: "pended", LastError: "catch-up stopped: source: TRUNCATE of public.orders"}); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for name, pg := range pgs {
		before[name] = shardState(t, ctx, pg)
	}

	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"rolled back", []string{"move", "--id", "mrb", "--range", "20:30", "--to", "s2"}, 1,
			[]string{"migration mrb was rolled back and moved nothing", "verify: table orders differs", "without --id"}},
		{"cancelled", []string{"move", "--id", "mcx", "--range", "30:40", "--to", "s2"}, 1,
			[]string{"migration mcx was cancelled and moved nothing", "cancelled by the operator", "without --id"}},
		{"another range", []string{"move", "--id", "mdone", "--range", "5:9", "--to", "s2"}, 1,
			[]string{"migration mdone moves 5:10 from s1 to s2, not 5:9 to s2", "another id"}},
		{"another target", []string{"move", "--id", "mrb", "--range", "20:30", "--to", "s3"}, 1,
			[]string{"migration mrb moves 20:30 from s1 to s2, not 20:30 to s3"}},
		{"apply of a rolled back step", []string{"apply", "--auto-approve", planFile}, 1,
			[]string{"step 1", "migration pended_1 was rolled back and moved nothing", "TRUNCATE of public.orders", "reshard plan"}},
		{"done", []string{"move", "--id", "mdone", "--range", "5:10", "--to", "s2"}, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := run(tc.args...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", res.code, tc.code, res.stdout, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if tc.code != 0 {
				if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n != 0 {
					t.Errorf("want one line, got %d:\n%s", n+1, res.stderr)
				}
			} else if !strings.Contains(res.stdout, "migration mdone: 5:10 s1 -> s2: done") {
				t.Errorf("move --id of a done migration reports:\n%s", res.stdout)
			}
			t.Logf("%s%s", res.stdout, res.stderr)
			for name, pg := range pgs {
				if after := shardState(t, ctx, pg); after != before[name] {
					t.Errorf("shard %s changed:\nbefore %s\nafter  %s", name, before[name], after)
				}
			}
		})
	}
	// What the message says to do works: the range moves under a new id.
	if res := run("move", "--range", "20:30", "--to", "s2"); res.code != 0 {
		t.Fatalf("move again without --id: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if m, err := env.store.GetMigration(ctx, "mrb"); err != nil || m.Phase != catalog.PhaseRolledBack {
		t.Errorf("the rolled back migration changed: %+v %v", m, err)
	}
	st, err = env.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Owner(20); r.Shard != "s2" || !r.Range.Equal(catalog.NewRange(20, 30)) {
		t.Errorf("20:30 is %+v, want it on s2", r)
	}
}
