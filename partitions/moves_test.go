package partitions_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

// TestRetentionWaitsForMoves: retention detaches or drops nothing on a shard that is the
// source or the target of a migration that has not flipped, or that holds a move's
// publication the catalog read did not show; the report says why for each partition kept,
// partitions are still created there, and the other shards are maintained normally.
func TestRetentionWaitsForMoves(t *testing.T) {
	pg, ctx := onePG(t, 3*time.Minute)
	shards := map[string]catalog.Shard{}
	for _, name := range []string{"s1", "s2", "s3"} {
		pg.Exec(ctx, "CREATE DATABASE "+name)
		shards[name] = catalog.Shard{Name: name, DSN: pg.DSN(name)}
		c, err := pgx.Connect(ctx, pg.DSN(name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, eventsDDL("events", "timestamptz")); err != nil {
			t.Fatal(err)
		}
		// Partitions from 1 March on, a row of each of 3 tenants every day.
		if _, err := partitions.Apply(ctx, c, []catalog.PartitionSpec{daily("events", 9, "", "")}, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), partitions.Options{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO events SELECT t, d, '2026-03-01 06:00+00'::timestamptz + (d - 1) * interval '1 day', 'x'
			FROM generate_series(1, 3) t, generate_series(1, 10) d`); err != nil {
			t.Fatal(err)
		}
		c.Close(ctx)
	}
	count := func(shard string) int64 {
		t.Helper()
		c, err := pgx.Connect(ctx, pg.DSN(shard))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var n int64
		if err := c.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	migrations := map[string]catalog.Migration{
		"m1":   {ID: "m1", Source: "s1", Target: "s2", Phase: catalog.PhaseCatchingUp},
		"old":  {ID: "old", Source: "s3", Target: "s1", Phase: catalog.PhaseDone},
		"back": {ID: "back", Source: "s3", Target: "s2", Phase: catalog.PhaseRolledBack},
		"no":   {ID: "no", Source: "s2", Target: "s3", Phase: catalog.PhaseCancelled},
	}
	specs := []catalog.PartitionSpec{daily("events", 2, "3d", "drop")}
	// cutoff 7 March 12:00: the partitions of 1..6 March are past retention.
	expired := "events_p20260301 events_p20260302 events_p20260303 events_p20260304 events_p20260305 events_p20260306"
	heldBy := map[string]string{"s1": "migration m1 is moving a range from it", "s2": "migration m1 is moving a range to it"}

	for _, dry := range []bool{true, false} {
		reps, err := partitions.Fleet(ctx, shards, specs, fakeNow, partitions.FleetOptions{DryRun: dry, Migrations: migrations}, connectShard)
		if err != nil || len(reps) != 3 {
			t.Fatalf("fleet (dry run %v): %v, %d reports", dry, err, len(reps))
		}
		for _, rep := range reps {
			tr := rep.Tables[0]
			if len(tr.Errors) > 0 || rep.Error != "" {
				t.Errorf("%s: errors %v %s", rep.Shard, tr.Errors, rep.Error)
			}
			if names(tr.Created) != "events_p20260311 events_p20260312" {
				t.Errorf("%s (dry run %v): created %q, want the premade partitions as on any shard", rep.Shard, dry, names(tr.Created))
			}
			why, held := heldBy[rep.Shard]
			if !held {
				if got := names(tr.Dropped); got != expired || tr.RetentionHeld != "" {
					t.Errorf("%s (dry run %v): dropped %q (held: %q), want %q", rep.Shard, dry, got, tr.RetentionHeld, expired)
				}
				continue
			}
			if len(tr.Dropped)+len(tr.Detached) > 0 || tr.RetentionHeld != why {
				t.Errorf("%s (dry run %v): dropped %q detached %q, held %q; want nothing removed, held: %q", rep.Shard, dry,
					names(tr.Dropped), names(tr.Detached), tr.RetentionHeld, why)
			}
			var kept []string
			for _, c := range tr.Skipped {
				if strings.Contains(c.Reason, why) {
					kept = append(kept, c.Partition)
				}
			}
			if strings.Join(kept, " ") != expired {
				t.Errorf("%s (dry run %v): partitions kept for the move %v, want %s", rep.Shard, dry, kept, expired)
			}
		}
	}
	// 30 rows a shard, 10 days of 3 tenants: 18 of them were in the dropped partitions.
	for shard, want := range map[string]int64{"s1": 30, "s2": 30, "s3": 12} {
		if n := count(shard); n != want {
			t.Errorf("%s: %d rows in events, want %d", shard, n, want)
		}
	}

	// What a move leaves on a shard holds retention there even when the catalog read does
	// not show the migration (it started after the read): its publication on the source,
	// its reshard.progress row on the target.
	s3, err := pgx.Connect(ctx, pg.DSN("s3"))
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close(ctx)
	only3 := map[string]catalog.Shard{"s3": shards["s3"]}
	marks := []struct{ set, unset, why string }{
		{`CREATE PUBLICATION reshard_m9 FOR TABLE events`, `DROP PUBLICATION reshard_m9`,
			"a move from this shard is under way (publication reshard_m9)"},
		{`CREATE SCHEMA reshard; CREATE TABLE reshard.progress (migration text PRIMARY KEY, lsn pg_lsn NOT NULL); INSERT INTO reshard.progress VALUES ('m8', '0/0')`,
			`DELETE FROM reshard.progress`, "a move to this shard is under way (migration m8 in reshard.progress)"},
	}
	for _, mk := range marks {
		if _, err := s3.Exec(ctx, mk.set); err != nil {
			t.Fatal(err)
		}
		reps, err := partitions.Fleet(ctx, only3, specs, fakeNow.Add(48*time.Hour), partitions.FleetOptions{}, connectShard)
		if err != nil {
			t.Fatal(err)
		}
		if tr := reps[0].Tables[0]; len(tr.Dropped) > 0 || tr.RetentionHeld != mk.why {
			t.Errorf("s3 after %q: dropped %q, held %q; want nothing dropped, held: %s", mk.set, names(tr.Dropped), tr.RetentionHeld, mk.why)
		}
		if n := count("s3"); n != 12 {
			t.Errorf("s3: %d rows in events, want 12", n)
		}
		if _, err := s3.Exec(ctx, mk.unset); err != nil {
			t.Fatal(err)
		}
	}
	// 7 and 8 March expire two days later, once no move uses s3.
	reps, err := partitions.Fleet(ctx, only3, specs, fakeNow.Add(48*time.Hour), partitions.FleetOptions{}, connectShard)
	if err != nil {
		t.Fatal(err)
	}
	if tr := reps[0].Tables[0]; names(tr.Dropped) != "events_p20260307 events_p20260308" || tr.RetentionHeld != "" {
		t.Errorf("s3 once the moves ended: dropped %q, held %q", names(tr.Dropped), tr.RetentionHeld)
	}
	if n := count("s3"); n != 6 {
		t.Errorf("s3: %d rows in events, want 6", n)
	}
}
