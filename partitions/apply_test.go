package partitions_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

// TestApply runs each behaviour of Plan and Apply on one real PostgreSQL 15 cluster,
// each on its own tables, with a fake clock.
func TestApply(t *testing.T) {
	runCases(t, []pgCase{
		{"premake creates exactly the missing partitions, twice changes nothing", premakeCreatesExactlyTheMissingPartitions},
		{"retention detaches only expired partitions, concurrently without a default", retentionDetachesOnlyExpiredPartitions},
		{"retention drops with a default partition and never the last one", retentionDropsButNeverTheLastPartition},
		{"default partition trap is reported, other tables go on, the fix works", defaultPartitionTrapIsReportedAndItsFixWorks},
		{"week, month and non-UTC zones get correct bounds", weeksMonthsAndZonesGetCorrectBounds},
		{"lock_timeout: retried until the lock is free, or a clear error", lockTimeoutIsRetriedOrAClearError},
		{"a pending DETACH CONCURRENTLY is finished", pendingDetachIsFinished},
		{"new partitions are covered by a publication on the root", newPartitionsArePublishedViaTheRoot},
		{"one apply at a time per shard; bad specs change nothing", oneApplyPerShardAndBadSpecsChangeNothing},
	})
}

// premakeCreatesExactlyTheMissingPartitions: plan changes nothing; apply creates the missing
// partitions with the parent's indexes, replica identity, owner, grants and row triggers,
// brings a hand-made one in line; a second apply changes nothing.
func premakeCreatesExactlyTheMissingPartitions(e *env) {
	ctx := e.ctx
	e.exec(`CREATE TABLE ev1 (tenant_id bigint NOT NULL, id bigint NOT NULL, created_at timestamptz NOT NULL, payload text) PARTITION BY RANGE (created_at);
CREATE UNIQUE INDEX ev1_ri ON ev1 (tenant_id, id, created_at);
ALTER TABLE ev1 REPLICA IDENTITY USING INDEX ev1_ri;
CREATE INDEX ev1_tenant ON ev1 (tenant_id);
ALTER TABLE ev1 OWNER TO appowner;
GRANT SELECT ON ev1 TO reader;
CREATE FUNCTION ev1_guard() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER ev1_guard BEFORE INSERT OR UPDATE ON ev1 FOR EACH ROW EXECUTE FUNCTION ev1_guard();
CREATE TABLE ev1_p20260310 PARTITION OF ev1 FOR VALUES FROM ('2026-03-10 00:00+00') TO ('2026-03-11 00:00+00');
CREATE TABLE ev1_default PARTITION OF ev1 DEFAULT`)
	specs := []catalog.PartitionSpec{daily("ev1", 4, "", "")}
	plan, err := partitions.Plan(ctx, e.conn(), specs, fakeNow)
	if err != nil {
		e.t.Fatal(err)
	}
	want := "ev1_p20260311 ev1_p20260312 ev1_p20260313 ev1_p20260314"
	if got := names(plan.Tables[0].Created); got != want || !plan.DryRun {
		e.t.Fatalf("plan creates %q, want %q", got, want)
	}
	if len(e.bounds("ev1")) != 2 {
		e.t.Fatal("plan changed something")
	}

	rep := e.apply(specs, fakeNow, partitions.Options{})
	tr := rep.Tables[0]
	if got := names(tr.Created); got != want || len(tr.Errors) > 0 {
		e.t.Fatalf("apply created %q (errors %v), want %q", got, tr.Errors, want)
	}
	if got := names(tr.Fixed); got != "ev1_p20260310" {
		e.t.Errorf("fixed %q, want the hand-made ev1_p20260310 brought in line", got)
	}
	if tr.Runway != 4 || tr.Partitions != 5 || tr.RunwayUntil == nil || !tr.RunwayUntil.Equal(time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)) {
		e.t.Errorf("runway %d until %v, %d partitions; want 4 until 15 March, 5", tr.Runway, tr.RunwayUntil, tr.Partitions)
	}
	b := e.bounds("ev1")
	if got := b["ev1_p20260312"]; got != "FOR VALUES FROM ('2026-03-12 00:00:00+00') TO ('2026-03-13 00:00:00+00')" {
		e.t.Errorf("bound of ev1_p20260312 = %s", got)
	}
	if len(b) != 6 {
		e.t.Errorf("partitions: %v", b)
	}
	for _, p := range []string{"ev1_p20260310", "ev1_p20260311", "ev1_p20260314"} {
		// The parent's indexes were cloned by PostgreSQL, the rest by reshard.
		if n := e.scalar(`SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass`, p); n != int64(2) {
			e.t.Errorf("%s has %v indexes, want 2", p, n)
		}
		if ri := e.scalar(`SELECT ic.relname::text FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_inherits i ON i.inhrelid = x.indexrelid
WHERE x.indrelid = $1::regclass AND x.indisreplident AND i.inhparent = 'ev1_ri'::regclass`, p); ri == nil {
			e.t.Errorf("%s: replica identity is not its partition of ev1_ri", p)
		}
		if owner := e.scalar(`SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = $1::regclass`, p); owner != "appowner" {
			e.t.Errorf("%s owner %v, want appowner", p, owner)
		}
		if ok := e.scalar(`SELECT has_table_privilege('reader', $1, 'SELECT')`, p); ok != true {
			e.t.Errorf("%s: reader cannot SELECT", p)
		}
		// A row trigger on the parent (like cutover's fence guard) is cloned too.
		if n := e.scalar(`SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = 'ev1_guard' AND tgparentid <> 0`, p); n != int64(1) {
			e.t.Errorf("%s has %v clones of the parent's row trigger, want 1", p, n)
		}
	}
	e.exec(`INSERT INTO ev1 VALUES (7, 1, '2026-03-13 08:00+00', 'x')`)
	if where := e.scalar(`SELECT tableoid::regclass::text FROM ev1 WHERE id = 1`); where != "ev1_p20260313" {
		e.t.Errorf("row landed in %v", where)
	}

	again := e.apply(specs, fakeNow, partitions.Options{})
	if again.Changes() != 0 || len(again.Errors()) != 0 {
		e.t.Fatalf("second apply changed %d things, errors %v", again.Changes(), again.Errors())
	}
	if got := names(again.Tables[0].Skipped); got != "ev1_p20260310 "+want {
		e.t.Errorf("second apply skipped %q", got)
	}
	if plan, _ := partitions.Plan(ctx, e.conn(), specs, fakeNow); plan.Changes() != 0 {
		e.t.Errorf("plan after apply has %d changes", plan.Changes())
	}
}

// retentionDetachesOnlyExpiredPartitions: retention detaches (concurrently: there is no
// default partition) exactly the partitions that end before the cutoff, as the plan said; the
// detached tables keep their rows.
func retentionDetachesOnlyExpiredPartitions(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev2", "timestamptz"))
	e.apply([]catalog.PartitionSpec{daily("ev2", 9, "", "")}, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), partitions.Options{})
	e.exec(`INSERT INTO ev2 SELECT t, d, '2026-03-01 06:00+00'::timestamptz + (d - 1) * interval '1 day' + t * interval '1 min', 'x' || t
		FROM generate_series(1, 10) d, generate_series(1, 3) t`)
	before := e.rows(partitionNames(e.bounds("ev2"))...)
	specs := []catalog.PartitionSpec{daily("ev2", 2, "3d", "")}
	plan, err := partitions.Plan(ctx, e.conn(), specs, fakeNow)
	if err != nil {
		e.t.Fatal(err)
	}
	rep := e.apply(specs, fakeNow, partitions.Options{})
	tr := rep.Tables[0]
	// cutoff = 7 March 12:00: [6 March, 7 March) ends before it, [7, 8) does not.
	want := "ev2_p20260301 ev2_p20260302 ev2_p20260303 ev2_p20260304 ev2_p20260305 ev2_p20260306"
	if got := names(tr.Detached); got != want || len(tr.Errors) > 0 {
		e.t.Fatalf("detached %q (errors %v), want %q", got, tr.Errors, want)
	}
	if names(plan.Tables[0].Detached) != want || names(plan.Tables[0].Created) != names(tr.Created) {
		e.t.Errorf("plan said detach %q create %q; apply did %q, %q", names(plan.Tables[0].Detached), names(plan.Tables[0].Created), want, names(tr.Created))
	}
	if got := names(tr.Created); got != "ev2_p20260311 ev2_p20260312" {
		e.t.Errorf("created %q", got)
	}
	if n := e.scalar(`SELECT count(*) FROM ev2`); n != int64(12) {
		e.t.Errorf("ev2 sees %v rows, want 12 (7..10 March, 3 tenants)", n)
	}
	// Detached, not dropped: the data is still there in a table of its own.
	if n := e.scalar(`SELECT count(*) FROM ev2_p20260301`); n != int64(3) {
		e.t.Errorf("detached ev2_p20260301 holds %v rows, want 3", n)
	}
	e.checkRows("ev2", before, strings.Fields(want))
	if again := e.apply(specs, fakeNow, partitions.Options{}); again.Changes() != 0 {
		e.t.Errorf("second apply changed %d things", again.Changes())
	}
}

// retentionDropsButNeverTheLastPartition: with retention_action drop and a default partition,
// expired partitions are dropped but never the last one, and the default partition is left
// alone.
func retentionDropsButNeverTheLastPartition(e *env) {
	e.exec(eventsDDL("ev3", "timestamptz") + `;
CREATE TABLE ev3_default PARTITION OF ev3 DEFAULT;
CREATE TABLE ev3_old1 PARTITION OF ev3 FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-01-02 00:00+00');
CREATE TABLE ev3_old2 PARTITION OF ev3 FOR VALUES FROM ('2026-01-02 00:00+00') TO ('2026-01-03 00:00+00');
INSERT INTO ev3 VALUES (1, 1, '2026-03-10 01:00+00', 'x'), (1, 2, '2026-03-11 01:00+00', 'x');
INSERT INTO ev3 SELECT t, 10 + d, '2026-01-01 05:00+00'::timestamptz + (d - 1) * interval '1 day', 'old' FROM generate_series(1, 3) t, generate_series(1, 2) d;
INSERT INTO ev3 SELECT t, 20, '2026-03-10 02:00+00', 'y' FROM generate_series(2, 3) t`)
	before := e.rows(partitionNames(e.bounds("ev3"))...)
	// Every period of the window has rows in the default partition, so nothing can be
	// created, and the newest old partition must stay.
	specs := []catalog.PartitionSpec{daily("ev3", 1, "7d", "drop")}
	tr := e.apply(specs, fakeNow, partitions.Options{}).Tables[0]
	if got := names(tr.Dropped); got != "ev3_old1" {
		e.t.Errorf("dropped %q, want ev3_old1", got)
	}
	kept := false
	for _, s := range tr.Skipped {
		kept = kept || s.Partition == "ev3_old2" && strings.Contains(s.Reason, "last partition")
	}
	if !kept || len(tr.Errors) != 2 {
		e.t.Errorf("want ev3_old2 kept as the last partition and 2 trap errors; skipped %+v errors %v", tr.Skipped, tr.Errors)
	}
	if n := e.scalar(`SELECT count(*) FROM pg_class WHERE relname = 'ev3_old1'`); n != int64(0) {
		e.t.Error("ev3_old1 still exists")
	}
	if _, ok := e.bounds("ev3")["ev3_default"]; !ok {
		e.t.Error("the default partition was touched")
	}
	e.checkRows("ev3", before, nil)
}

// defaultPartitionTrapIsReportedAndItsFixWorks: a default partition holding rows of a period
// to create is reported with the SQL that fixes it, the other tables go on, and after that SQL
// runs apply finishes the job with every tenant's rows as they were.
func defaultPartitionTrapIsReportedAndItsFixWorks(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev4", "timestamptz") + `;
CREATE TABLE ev4_default PARTITION OF ev4 DEFAULT;
GRANT SELECT ON ev4 TO reader;
INSERT INTO ev4 VALUES (1, 1, '2026-03-11 08:00+00', 'a'), (2, 2, '2026-03-11 09:30+00', 'b'), (3, 3, '2026-03-11 23:59:59+00', 'c'), (4, 4, '2026-04-01 00:00+00', 'later');
` + eventsDDL("ev5", "timestamptz"))
	before := e.rows("ev4")
	specs := []catalog.PartitionSpec{daily("ev4", 2, "", ""), daily("ev5", 2, "", "")}
	plan, err := partitions.Plan(ctx, e.conn(), specs, fakeNow)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(plan.Errors()) != 1 {
		e.t.Errorf("plan errors %v, want the trap", plan.Errors())
	}
	rep := e.apply(specs, fakeNow, partitions.Options{})
	ev4, ev5 := table(rep, "ev4"), table(rep, "ev5")
	if got := names(ev5.Created); got != "ev5_p20260310 ev5_p20260311 ev5_p20260312" || len(ev5.Errors) > 0 {
		e.t.Errorf("ev5 created %q errors %v", got, ev5.Errors)
	}
	if got := names(ev4.Created); got != "ev4_p20260310 ev4_p20260312" {
		e.t.Errorf("ev4 created %q, want all but the 11th", got)
	}
	if len(ev4.Errors) != 1 {
		e.t.Fatalf("ev4 errors %v, want one", ev4.Errors)
	}
	msg := ev4.Errors[0]
	e.t.Logf("trap message: %s", msg)
	for _, want := range []string{"not creating ev4_p20260311", "ev4_default already holds 3 row(s)", "from 2026-03-11 08:00:00+00:00 to 2026-03-11 23:59:59+00:00", "BEGIN;"} {
		if !strings.Contains(msg, want) {
			e.t.Errorf("trap message lacks %q", want)
		}
	}
	if ev4.Runway != 0 {
		e.t.Errorf("ev4 runway %d, want 0 (a hole tomorrow)", ev4.Runway)
	}
	// The SQL in the message is the fix: run it, and apply finishes the job.
	fix := msg[strings.Index(msg, "BEGIN;"):]
	e.exec(fix)
	again := e.apply(specs, fakeNow, partitions.Options{})
	ev4 = table(again, "ev4")
	if len(ev4.Errors) > 0 || names(ev4.Fixed) != "ev4_p20260311" || ev4.Runway != 2 {
		e.t.Errorf("after the fix: errors %v fixed %q runway %d", ev4.Errors, names(ev4.Fixed), ev4.Runway)
	}
	if n := e.scalar(`SELECT count(*) FROM ev4_p20260311`); n != int64(3) {
		e.t.Errorf("ev4_p20260311 holds %v rows, want 3", n)
	}
	if n := e.scalar(`SELECT count(*) FROM ev4_default`); n != int64(1) {
		e.t.Errorf("default holds %v rows, want 1 (April)", n)
	}
	// The fix moved rows between partitions: every tenant's rows are as they were.
	if err := before.Diff("ev4", e.rows("ev4")); err != nil {
		e.t.Error(err)
	}
	if ok := e.scalar(`SELECT has_table_privilege('reader', 'ev4_p20260311', 'SELECT')`); ok != true {
		e.t.Error("the grant was not copied to the partition made by the fix")
	}
}

// weeksMonthsAndZonesGetCorrectBounds: week and month intervals and time zones other than UTC
// (across a DST change) get the bounds PostgreSQL reads back, so a second apply changes
// nothing.
func weeksMonthsAndZonesGetCorrectBounds(e *env) {
	e.exec(eventsDDL("wk", "timestamp") + ";" + eventsDDL("mo", "date") + ";" + eventsDDL("pa", "timestamptz"))
	specs := []catalog.PartitionSpec{
		{Table: "wk", Column: "created_at", Interval: "week", Premake: 1, TimeZone: "Europe/Paris"},
		{Table: "mo", Column: "created_at", Interval: "month", Premake: 1, TimeZone: "America/New_York"},
		{Table: "pa", Column: "created_at", Interval: "day", Premake: 1, TimeZone: "Europe/Paris"},
	}
	now := time.Date(2026, 3, 28, 23, 30, 0, 0, time.UTC) // Sunday 29 March 00:30 in Paris, DST starts at 02:00
	rep := e.apply(specs, now, partitions.Options{})
	if errs := rep.Errors(); len(errs) > 0 {
		e.t.Fatal(errs)
	}
	want := map[string]map[string]string{
		"wk": {
			"wk_p20260323": "FOR VALUES FROM ('2026-03-23 00:00:00') TO ('2026-03-30 00:00:00')",
			"wk_p20260330": "FOR VALUES FROM ('2026-03-30 00:00:00') TO ('2026-04-06 00:00:00')",
		},
		"mo": {
			"mo_p20260301": "FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')",
			"mo_p20260401": "FOR VALUES FROM ('2026-04-01') TO ('2026-05-01')",
		},
		"pa": {
			"pa_p20260329": "FOR VALUES FROM ('2026-03-28 23:00:00+00') TO ('2026-03-29 22:00:00+00')",
			"pa_p20260330": "FOR VALUES FROM ('2026-03-29 22:00:00+00') TO ('2026-03-30 22:00:00+00')",
		},
	}
	for tbl, w := range want {
		got := e.bounds(tbl)
		for n, b := range w {
			if got[n] != b {
				e.t.Errorf("%s: %s = %q, want %q", tbl, n, got[n], b)
			}
		}
		if len(got) != len(w) {
			e.t.Errorf("%s: partitions %v", tbl, got)
		}
	}
	// Bounds read back from the catalog match what was computed: nothing more to do.
	if again := e.apply(specs, now, partitions.Options{}); again.Changes() != 0 || len(again.Errors()) > 0 {
		e.t.Errorf("second apply: %d changes, errors %v", again.Changes(), again.Errors())
	}
}

// lockTimeoutIsRetriedOrAClearError: DDL behind a long reader's lock is retried under
// lock_timeout until the lock is free; a lock held longer than every attempt is a clear error
// for that table while the others go on.
func lockTimeoutIsRetriedOrAClearError(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev6", "timestamptz") + ";" + eventsDDL("ev7", "timestamptz"))
	// A long reader (like a mover's snapshot copy) holds ACCESS SHARE on ev6 for 1.5s.
	holder := e.conn()
	if _, err := holder.Exec(ctx, "BEGIN; SELECT count(*) FROM ev6"); err != nil {
		e.t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(1500 * time.Millisecond)
		_, _ = holder.Exec(ctx, "COMMIT")
	}()
	// Meanwhile a writer measures how long its inserts wait behind the DDL's lock queue.
	stop := make(chan struct{})
	var worst time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		w, err := pgx.Connect(ctx, e.pg.DSNApp())
		if err != nil {
			return
		}
		defer w.Close(ctx)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			_, _ = w.Exec(ctx, "SELECT count(*) FROM ev6")
			worst = max(worst, time.Since(start))
			time.Sleep(20 * time.Millisecond)
		}
	}()
	opts := partitions.Options{LockTimeout: 200 * time.Millisecond, Attempts: 20, Backoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}
	start := time.Now()
	rep := e.apply([]catalog.PartitionSpec{daily("ev6", 1, "", "")}, fakeNow, opts)
	close(stop)
	wg.Wait()
	tr := rep.Tables[0]
	if len(tr.Errors) > 0 || len(tr.Created) != 2 || tr.Created[0].Attempts < 2 {
		e.t.Fatalf("created %+v errors %v: want 2 partitions, the first after retries", tr.Created, tr.Errors)
	}
	e.t.Logf("apply took %v; first create needed %d attempts; a reader waited at most %v (lock_timeout %v)", time.Since(start), tr.Created[0].Attempts, worst, opts.LockTimeout)

	// A lock held for longer than every attempt: a clear error, the other table goes on.
	if _, err := holder.Exec(ctx, "BEGIN; LOCK TABLE ev7 IN ACCESS SHARE MODE"); err != nil {
		e.t.Fatal(err)
	}
	defer func() { _, _ = holder.Exec(ctx, "ROLLBACK") }()
	opts.Attempts = 2
	rep = e.apply([]catalog.PartitionSpec{daily("ev7", 1, "", ""), daily("ev6", 2, "", "")}, fakeNow, opts)
	ev7, ev6 := table(rep, "ev7"), table(rep, "ev6")
	if len(ev7.Errors) != 2 || !strings.Contains(ev7.Errors[0], "lock not granted within lock_timeout 200ms in 2 attempts") {
		e.t.Errorf("ev7 errors %v", ev7.Errors)
	} else {
		e.t.Logf("lock error: %s", ev7.Errors[0])
	}
	if names(ev6.Created) != "ev6_p20260312" {
		e.t.Errorf("ev6 created %q", names(ev6.Created))
	}
}

// pendingDetachIsFinished: a partition left pending by an interrupted DETACH ... CONCURRENTLY
// is detached for good.
func pendingDetachIsFinished(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev8", "timestamptz"))
	e.apply([]catalog.PartitionSpec{daily("ev8", 3, "", "")}, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), partitions.Options{})
	// A transaction whose snapshot sees ev8 makes the second phase of the detach wait;
	// lock_timeout interrupts it and leaves the partition pending.
	holder := e.conn()
	if _, err := holder.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ev8"); err != nil {
		e.t.Fatal(err)
	}
	c := e.conn()
	_, err := c.Exec(ctx, "SET lock_timeout = '300ms'")
	if err == nil {
		_, err = c.Exec(ctx, "ALTER TABLE ev8 DETACH PARTITION ev8_p20260301 CONCURRENTLY")
	}
	_, _ = holder.Exec(ctx, "COMMIT")
	if p := e.scalar(`SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'ev8_p20260301'::regclass`); p != true {
		e.t.Skipf("could not leave a detach pending (detach returned %v)", err)
	}
	tr := e.apply([]catalog.PartitionSpec{daily("ev8", 0, "3d", "")}, fakeNow, partitions.Options{}).Tables[0]
	if !strings.Contains(names(tr.Detached), "ev8_p20260301") || len(tr.Errors) > 0 {
		e.t.Errorf("detached %q errors %v", names(tr.Detached), tr.Errors)
	}
	if n := e.scalar(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'ev8'::regclass AND inhdetachpending`); n != int64(0) {
		e.t.Errorf("%v partitions still pending", n)
	}
}

// newPartitionsArePublishedViaTheRoot: rows of a partition made by apply are published as the
// root's, through the root's row filter (as a move's publication needs).
func newPartitionsArePublishedViaTheRoot(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev9", "timestamptz") + `;
CREATE PUBLICATION pub9 FOR TABLE ev9 WHERE (tenant_id >= 0 AND tenant_id < 100) WITH (publish = 'insert, update, delete', publish_via_partition_root = true)`)
	c := e.conn()
	if _, err := c.Exec(ctx, "SELECT pg_create_logical_replication_slot('slot9', 'pgoutput')"); err != nil {
		e.t.Fatal(err)
	}
	defer func() { _, _ = e.conn().Exec(ctx, "SELECT pg_drop_replication_slot('slot9')") }()
	tr := e.apply([]catalog.PartitionSpec{daily("ev9", 1, "", "")}, fakeNow, partitions.Options{}).Tables[0]
	if names(tr.Created) != "ev9_p20260310 ev9_p20260311" {
		e.t.Fatalf("created %q errors %v", names(tr.Created), tr.Errors)
	}
	e.exec(`INSERT INTO ev9 VALUES (5, 1, '2026-03-11 10:00+00', 'in range'), (500, 2, '2026-03-11 10:00+00', 'other tenant');
UPDATE ev9 SET payload = 'updated' WHERE tenant_id = 5;
DELETE FROM ev9 WHERE tenant_id = 5`)
	// Logical decoding through SQL reads only flushed WAL (the test cluster runs with
	// synchronous_commit off): wait for the transaction to be decodable.
	peek := `SELECT data FROM pg_logical_slot_peek_binary_changes('slot9', NULL, NULL, 'proto_version', '1', 'publication_names', 'pub9')`
	for i := 0; i < 100 && e.scalar(`SELECT count(*) FROM (`+peek+`) x`) == int64(0); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := c.Query(ctx, peek)
	if err != nil {
		e.t.Fatal(err)
	}
	rel := map[uint32]string{}
	var changes []string // relation and kind of each change, in order
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			e.t.Fatal(err)
		}
		m, err := pglogrepl.Parse(data)
		if err != nil {
			e.t.Fatal(err)
		}
		switch m := m.(type) {
		case *pglogrepl.RelationMessage:
			rel[m.RelationID] = m.RelationName
		case *pglogrepl.InsertMessage:
			changes = append(changes, "insert "+rel[m.RelationID]+" tenant "+string(m.Tuple.Columns[0].Data))
		case *pglogrepl.UpdateMessage:
			changes = append(changes, "update "+rel[m.RelationID])
		case *pglogrepl.DeleteMessage:
			changes = append(changes, "delete "+rel[m.RelationID])
		}
	}
	if rows.Err() != nil {
		e.t.Fatal(rows.Err())
	}
	// Published as the root, through the root's row filter: only tenant 5.
	if got := strings.Join(changes, ", "); got != "insert ev9 tenant 5, update ev9, delete ev9" {
		e.t.Errorf("decoded %q, want the root ev9's insert (tenant 5 only), update and delete", got)
	}
}

// oneApplyPerShardAndBadSpecsChangeNothing: a second apply on a shard is refused with ErrBusy,
// a bad spec changes nothing, and a missing table is reported while the others go on.
func oneApplyPerShardAndBadSpecsChangeNothing(e *env) {
	ctx := e.ctx
	e.exec(eventsDDL("ev10", "timestamptz"))
	holder := e.conn()
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock(hashtext('reshard.partitions'))"); err != nil {
		e.t.Fatal(err)
	}
	_, err := partitions.Apply(ctx, e.conn(), []catalog.PartitionSpec{daily("ev10", 1, "", "")}, fakeNow, partitions.Options{})
	if !errors.Is(err, partitions.ErrBusy) {
		e.t.Errorf("apply while another holds the lock: %v, want ErrBusy", err)
	}
	_, _ = holder.Exec(ctx, "SELECT pg_advisory_unlock_all()")
	_, err = partitions.Apply(ctx, e.conn(), []catalog.PartitionSpec{daily("ev10", 1, "", ""), {Table: "ev10", Column: "created_at", Interval: "fortnight"}}, fakeNow, partitions.Options{})
	if !errors.Is(err, catalog.ErrInvalid) || len(e.bounds("ev10")) != 0 {
		e.t.Errorf("bad spec: %v, partitions %v", err, e.bounds("ev10"))
	}
	rep := e.apply([]catalog.PartitionSpec{daily("nosuch", 1, "", ""), daily("ev10", 1, "", "")}, fakeNow, partitions.Options{})
	if errs := table(rep, "nosuch").Errors; len(errs) != 1 || !strings.Contains(errs[0], "not found on this shard") {
		e.t.Errorf("missing table: %v", errs)
	}
	if len(table(rep, "ev10").Created) != 2 {
		e.t.Errorf("ev10: %+v", table(rep, "ev10"))
	}
}
