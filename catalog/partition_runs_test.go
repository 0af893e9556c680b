package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleRun(holder string, created, runway int) PartitionRun {
	until := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	return PartitionRun{
		Time: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC), Seconds: 0.25, Holder: holder, Outcome: PartitionRunOK,
		Created: created, MinRunway: runway,
		Shards: []PartitionShardRun{
			{Shard: "s1", Tables: []PartitionTableRun{{Table: "events", Runway: runway + 1, Created: created}, {Table: "audit", Runway: runway, RunwayUntil: &until}}},
			{Shard: "s2", Tables: []PartitionTableRun{{Table: "events", Runway: runway, RunwayUntil: &until}}},
		},
	}
}

func historyOfKind(t *testing.T, s *Store, kind string) []Event {
	t.Helper()
	evs, err := s.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for _, ev := range evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// TestPartitionRunOnlyLeaderWrites: the leader's run is stored and read back as written;
// a scheduler that lost the election (lease gone, or resigned, while another leads) is
// refused with ErrNotLeader and changes nothing.
func TestPartitionRunOnlyLeaderWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b, bcli := twoProcesses(t, "sched-a", "sched-b")
	defer bcli.Close()
	initDemo(t, a)

	if r, err := a.LastPartitionRun(ctx); r != nil || err != nil {
		t.Fatalf("LastPartitionRun before any run = %+v, %v; want nil, nil", r, err)
	}
	if err := a.PutPartitionRun(ctx, nil, sampleRun("", 0, 3)); !errors.Is(err, ErrNotLeader) {
		t.Errorf("put without a leader = %v, want ErrNotLeader", err)
	}

	la := schedulerLeader(t, ctx, a)
	want := sampleRun("", 4, 3)
	if err := a.PutPartitionRun(ctx, la, want); err != nil {
		t.Fatalf("leader's put: %v", err)
	}
	got, err := b.LastPartitionRun(ctx)
	if err != nil || got == nil {
		t.Fatalf("LastPartitionRun = %v, %v", got, err)
	}
	want.Holder = "sched-a" // filled from the store when empty
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("round trip:\n got %s\nwant %s", g, w)
	}
	if sh := got.Shortest(); len(sh) != 2 || sh[0].Shard != "s1" || sh[0].Table != "audit" || sh[1].Shard != "s2" || sh[0].RunwayUntil == nil {
		t.Errorf("Shortest = %+v, want s1/audit and s2/events", sh)
	}

	// a's lease is lost (etcd unreachable past its TTL, say) and b becomes the leader. a
	// still holds its Leader value, but its writes are refused.
	won := make(chan *Leader, 1)
	go func() {
		lb, err := b.Campaign(ctx, "scheduler", WithTTL(5))
		if err != nil {
			t.Error(err)
		}
		won <- lb
	}()
	if _, err := a.cli.Revoke(ctx, la.session.Lease()); err != nil {
		t.Fatal(err)
	}
	lb := <-won
	if lb == nil {
		t.FailNow()
	}
	stale := sampleRun("sched-a", 9, 9)
	if err := a.PutPartitionRun(ctx, la, stale); !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "scheduler") {
		t.Errorf("put by the deposed leader = %v, want ErrNotLeader naming the election", err)
	}
	if r, _ := a.LastPartitionRun(ctx); r == nil || r.Holder != "sched-a" || r.Created != 4 {
		t.Errorf("after a refused put the last run is %+v, want a's first run unchanged", r)
	}
	if err := b.PutPartitionRun(ctx, lb, sampleRun("sched-b", 0, 3)); err != nil {
		t.Fatalf("new leader's put: %v", err)
	}
	if r, _ := a.LastPartitionRun(ctx); r == nil || r.Holder != "sched-b" {
		t.Errorf("last run = %+v, want b's", r)
	}
	// A leader that resigned is refused too.
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PutPartitionRun(ctx, lb, sampleRun("sched-b", 0, 3)); !errors.Is(err, ErrNotLeader) {
		t.Errorf("put after resign = %v, want ErrNotLeader", err)
	}
	// A leader of another cluster's election cannot write this cluster's record.
	other, err := NewStore(a.cli, "other")
	if err != nil {
		t.Fatal(err)
	}
	lo := schedulerLeader(t, ctx, other)
	defer lo.Resign(ctx)
	if err := a.PutPartitionRun(ctx, lo, sampleRun("x", 0, 3)); !errors.Is(err, ErrInvalid) {
		t.Errorf("put with another cluster's leader = %v, want ErrInvalid", err)
	}
}

// TestPartitionRunHistory: a run goes to the history when it changed something or its
// result differs from the previous run's; a run like the one before adds no event.
func TestPartitionRunHistory(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	initDemo(t, s)
	l := schedulerLeader(t, ctx, s)
	defer l.Resign(ctx)
	failing := sampleRun("a", 0, 2)
	failing.Outcome, failing.Errors = PartitionRunErrors, []string{"s2: events: lock not granted"}
	steps := []struct {
		name      string
		run       PartitionRun
		newEvents int
	}{
		{"first run", sampleRun("a", 0, 3), 1},
		{"same again", sampleRun("a", 0, 3), 0},
		{"created partitions", sampleRun("a", 3, 3), 1},
		{"nothing to do again", sampleRun("a", 0, 3), 0},
		{"runway shrank", sampleRun("a", 0, 2), 1},
		{"errors appear", failing, 1},
		{"same errors", failing, 0},
		{"recovered", sampleRun("a", 0, 2), 1},
	}
	n := len(historyOfKind(t, s, EventPartitions))
	for _, st := range steps {
		if err := s.PutPartitionRun(ctx, l, st.run); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		evs := historyOfKind(t, s, EventPartitions)
		if len(evs)-n != st.newEvents {
			t.Errorf("%s: %d new history events, want %d", st.name, len(evs)-n, st.newEvents)
		}
		n = len(evs)
	}
	evs := historyOfKind(t, s, EventPartitions)
	if d := evs[0].Detail; !strings.Contains(d, "ok") || !strings.Contains(d, "runway 3 (fewest: s1/audit, s2/events)") {
		t.Errorf("event detail %q: want outcome and fewest runway", d)
	}
}

// TestPartitionRunRejectsBadInput: a bad record, or no catalog, is one clear error and
// writes nothing.
func TestPartitionRunRejectsBadInput(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	l := schedulerLeader(t, ctx, s)
	defer l.Resign(ctx)
	if err := s.PutPartitionRun(ctx, l, sampleRun("a", 0, 3)); !errors.Is(err, ErrNotFound) {
		t.Errorf("put without a catalog = %v, want ErrNotFound", err)
	}
	initDemo(t, s)
	huge := sampleRun("a", 0, 3)
	huge.Errors = []string{strings.Repeat("x", maxPartitionRunBytes)}
	cases := []struct {
		name string
		mod  func(*PartitionRun)
		want string
	}{
		{"outcome", func(r *PartitionRun) { r.Outcome = "great" }, "outcome"},
		{"no time", func(r *PartitionRun) { r.Time = time.Time{} }, "no time"},
		{"runway", func(r *PartitionRun) { r.MinRunway = -2 }, "min runway"},
		{"shard name", func(r *PartitionRun) { r.Shards[0].Shard = "S 1" }, "shard"},
		{"too big", func(r *PartitionRun) { r.Errors = huge.Errors }, "bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := sampleRun("a", 0, 3)
			c.mod(&r)
			err := s.PutPartitionRun(ctx, l, r)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
	resp, err := cli.Get(ctx, s.key(PartitionRunKey()))
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a refused record was written: %v %v", resp, err)
	}
	// A value that is not a run is reported with its key.
	if _, err := cli.Put(ctx, s.key(PartitionRunKey()), "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LastPartitionRun(ctx); err == nil || !strings.Contains(err.Error(), "partitions/last_run") {
		t.Errorf("bad stored value: %v", err)
	}
}
