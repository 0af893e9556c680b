package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/metrics/metricstest"
)

// TestScheduleRecordsRuns runs `reshard schedule` against a real etcd catalog and two real
// shards: its run lands in the catalog with the runway of every shard's table, and
// `reshard status` (text and -o json) shows it.
func TestScheduleRecordsRuns(t *testing.T) {
	env := partitionsCluster(t, "schedtest")
	ctx := testContext(t, 2*time.Minute)
	if res := runCLI(t, ctx, append(env.global, "status")...); res.code != 0 || !strings.Contains(res.stdout, "last partition run: none recorded") {
		t.Errorf("status before any run: %+v", res)
	}

	// The scheduler runs at once and then hourly; stop it (as SIGTERM does) once its first
	// run is in the catalog. The globals are parsed before it starts, and the other
	// commands run only after it returned, so they do not race on them.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	root := newRootCmd()
	var logs bytes.Buffer
	root.SetOut(&logs)
	root.SetErr(&logs)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	root.SetArgs(append(env.global, "schedule", "--every", "1h", "--ttl", "5", "--metrics", metricsAddr))
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(sctx) }()
	var (
		run *catalog.PartitionRun
		err error
	)
	for deadline := time.Now().Add(time.Minute); run == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("no run recorded within a minute; scheduler log:\n%s", logs.String())
		}
		if run, err = env.store.LastPartitionRun(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// --metrics serves the run: each shard's table's runway and the run's outcome and time.
	fams := scrapeMetrics(t, "http://"+metricsAddr+"/metrics")
	metricstest.Expect(t, fams, []metricstest.Series{
		{Name: "reshard_partition_runway_periods", Labels: map[string]string{"shard": "s1", "table": "events"}, Want: 2},
		{Name: "reshard_partition_runway_periods", Labels: map[string]string{"shard": "s2", "table": "events"}, Want: 2},
		{Name: "reshard_scheduler_last_run_outcome", Labels: map[string]string{"outcome": "ok"}, Want: 1},
		{Name: "reshard_scheduler_last_run_outcome", Labels: map[string]string{"outcome": "failed"}, Want: 0},
		{Name: "reshard_scheduler_last_run_timestamp_seconds", Labels: nil, Want: float64(run.Time.UnixNano()) / 1e9},
	})
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("schedule returned %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("schedule did not stop within 15s of its context ending")
	}
	t.Logf("scheduler log:\n%s", logs.String())

	if run.Outcome != catalog.PartitionRunOK || run.Created != 6 || run.MinRunway != 2 || len(run.Shards) != 2 || len(run.Errors) != 0 {
		t.Errorf("recorded run %+v: want ok, 3 partitions created on each of 2 shards, runway 2", run)
	}
	for _, sh := range run.Shards {
		if len(sh.Tables) != 1 || sh.Tables[0].Table != "events" || sh.Tables[0].Runway != 2 || sh.Tables[0].Created != 3 || sh.Tables[0].RunwayUntil == nil {
			t.Errorf("shard %s: %+v, want events with runway 2 and 3 created", sh.Shard, sh.Tables)
		}
	}
	if host := run.Holder; !strings.Contains(host, " pid ") {
		t.Errorf("holder %q: want the name the election uses (host pid N)", host)
	}
	if evs, err := env.store.History(ctx, 1); err != nil || len(evs) != 1 || evs[0].Kind != catalog.EventPartitions {
		t.Errorf("last history event %+v, %v: want the run's partitions event", evs, err)
	}

	res := runCLI(t, ctx, append(env.global, "status")...)
	for _, want := range []string{"partition scheduler: none running", "last partition run: ", ": ok in ", "created 6, detached 0, dropped 0",
		"runway: 2 premade partitions left at the fewest, on s1/events, s2/events, until "} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, res.stdout)
		}
	}
	t.Logf("status:\n%s", res.stdout)
	res = runCLI(t, ctx, append(env.global, "status", "-o", "json")...)
	var st struct {
		PartitionScheduler struct {
			Leader       string                    `json:"leader"`
			LastRun      *catalog.PartitionRun     `json:"last_run"`
			FewestRunway []catalog.PartitionRunway `json:"fewest_runway"`
		} `json:"partition_scheduler"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || res.code != 0 {
		t.Fatalf("status -o json: %v\n%s%s", err, res.stdout, res.stderr)
	}
	ps := st.PartitionScheduler
	if ps.Leader != "" || ps.LastRun == nil || ps.LastRun.MinRunway != 2 || len(ps.FewestRunway) != 2 || ps.FewestRunway[1].Shard != "s2" {
		t.Errorf("status -o json partition_scheduler = %+v", ps)
	}
}
