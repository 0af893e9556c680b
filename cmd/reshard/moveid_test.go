package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/planner"
)

// TestMoveIDOfEndedMigration: `move --id` of a migration that was rolled back or cancelled
// exits 1 with the journal's reason and says to move again without --id (which works); of
// a done one it exits 0 and reports it (the range did move); of one that moves another
// range or to another shard it exits 1. apply refuses a plan whose move was rolled back.
func TestMoveIDOfEndedMigration(t *testing.T) {
	etcd, _, store, pgs := moveFleet(t, "ended")
	ctx := testContext(t, 4*time.Minute)
	run := cliRunner(t, ctx, "--etcd", etcd, "--cluster", "ended")
	if res := run("move", "--id", "mdone", "--range", "5:10", "--to", "s2"); res.code != 0 {
		t.Fatalf("move: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, m := range []catalog.Migration{
		{ID: "mrb", Kind: catalog.KindMove, Range: catalog.NewRange(20, 30), Source: "s1", Target: "s2", Phase: catalog.PhaseRolledBack,
			LastError: "cutover mrb: verify: table orders differs: 100 rows on s1, 99 on s2"},
		{ID: "mcx", Kind: catalog.KindMove, Range: catalog.NewRange(30, 40), Source: "s1", Target: "s2", Phase: catalog.PhaseCancelled,
			LastError: "cancelled by the operator"},
	} {
		if err := store.PutMigration(ctx, &m); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := planner.Plan{Version: planner.FormatVersion, ID: "pended", Cluster: "ended", Revision: st.Revision,
		Steps: []planner.Step{{N: 1, Kind: planner.StepMove, Range: catalog.NewRange(40, 50), From: "s1", To: "s2"}}, Moves: 1}
	b, _ := json.Marshal(p)
	planFile := writeFile(t, t.TempDir(), "plan.json", string(b))
	if err := store.PutMigration(ctx, &catalog.Migration{ID: "pended_1", Kind: catalog.KindMove, Range: catalog.NewRange(40, 50),
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
	if m, err := store.GetMigration(ctx, "mrb"); err != nil || m.Phase != catalog.PhaseRolledBack {
		t.Errorf("the rolled back migration changed: %+v %v", m, err)
	}
	st, err = store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := st.Owner(20); r.Shard != "s2" || !r.Range.Equal(catalog.NewRange(20, 30)) {
		t.Errorf("20:30 is %+v, want it on s2", r)
	}
}
