package partitions_test

import (
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

// TestFleetReportsAnUnreachableShard: an unreachable shard is reported, the others are
// maintained, and the run's summary counts both.
func TestFleetReportsAnUnreachableShard(t *testing.T) {
	pg, ctx := onePG(t, 2*time.Minute)
	pg.Exec(ctx, eventsDDL("ev11", "timestamptz"))
	shards := map[string]catalog.Shard{
		"good": {Name: "good", DSN: pg.DSNApp()},
		"gone": {Name: "gone", DSN: "host=127.0.0.1 port=1 user=postgres dbname=app connect_timeout=2"},
	}
	specs := []catalog.PartitionSpec{daily("ev11", 1, "", "")}
	reps, err := partitions.Fleet(ctx, shards, specs, fakeNow, partitions.FleetOptions{}, connectShard)
	if err != nil || len(reps) != 2 {
		t.Fatalf("fleet: %v, %d reports", err, len(reps))
	}
	gone, good := reps[0], reps[1]
	if gone.Shard != "gone" || gone.Error == "" || good.Shard != "good" || len(good.Tables[0].Created) != 2 {
		t.Errorf("reports: gone %+v, good %+v", gone, good)
	}
	rec := partitions.Summarize(fakeNow, time.Second, reps)
	if rec.Outcome != "errors" || rec.Created != 2 || rec.MinRunway != 1 || len(rec.Errors) != 1 {
		t.Errorf("summary %+v", rec)
	}
}
