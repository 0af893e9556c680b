package partitions_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/partitions"
)

// fakeNow is the test clock: Tuesday 10 March 2026, 12:00 UTC.
var fakeNow = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	pg  *testenv.PG
	ctx context.Context
}

func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(e.ctx, e.pg.DSNApp())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// exec runs SQL statements on the app database and fails the case on error.
func (e *env) exec(sql string) {
	e.t.Helper()
	if _, err := e.conn().Exec(e.ctx, sql); err != nil {
		e.t.Fatalf("exec %q: %v", sql, err)
	}
}

func (e *env) apply(specs []catalog.PartitionSpec, now time.Time, opts partitions.Options) *partitions.Report {
	e.t.Helper()
	rep, err := partitions.Apply(e.ctx, e.conn(), specs, now, opts)
	if err != nil {
		e.t.Fatalf("apply: %v", err)
	}
	return rep
}

// bounds returns every partition of table with pg_get_expr's bound, printed in UTC.
func (e *env) bounds(table string) map[string]string {
	e.t.Helper()
	c := e.conn()
	if _, err := c.Exec(e.ctx, "SET TimeZone = 'UTC'"); err != nil {
		e.t.Fatal(err)
	}
	rows, err := c.Query(e.ctx, `SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass`, table)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var n, b string
		if err := rows.Scan(&n, &b); err != nil {
			e.t.Fatal(err)
		}
		out[n] = b
	}
	if rows.Err() != nil {
		e.t.Fatal(rows.Err())
	}
	return out
}

func (e *env) scalar(sql string, args ...any) any {
	e.t.Helper()
	var v any
	if err := e.conn().QueryRow(e.ctx, sql, args...).Scan(&v); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// rows fingerprints every tenant's rows in each named relation (a partitioned table, a
// partition, a detached partition).
func (e *env) rows(rels ...string) demo.Fingerprints {
	e.t.Helper()
	f, err := demo.Fingerprint(e.ctx, e.conn(), rels)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// checkRows checks every tenant's rows after retention against before (the fingerprint of
// every partition of parent before it ran): each partition still attached and each detached
// one holds exactly its rows, and parent holds exactly the attached partitions' rows. Only
// the rows of dropped partitions are gone.
func (e *env) checkRows(parent string, before demo.Fingerprints, detached []string) {
	e.t.Helper()
	var attached []string
	for p := range e.bounds(parent) {
		attached = append(attached, p)
	}
	kept := append(append([]string(nil), attached...), detached...)
	if err := before.Tables(kept...).Diff("its partition", e.rows(kept...)); err != nil {
		e.t.Errorf("%s: partitions that were kept changed: %v", parent, err)
	}
	if err := before.Merge(parent, attached...).Diff(parent, e.rows(parent)); err != nil {
		e.t.Errorf("%s does not hold exactly the rows of its attached partitions: %v", parent, err)
	}
}

func partitionNames(b map[string]string) []string {
	var out []string
	for p := range b {
		out = append(out, p)
	}
	return out
}

func names(cs []partitions.Change) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Partition)
	}
	return strings.Join(s, " ")
}

func table(r *partitions.Report, name string) partitions.TableReport {
	for _, t := range r.Tables {
		if t.Table == name {
			return t
		}
	}
	return partitions.TableReport{}
}

// eventsDDL is a sharded, date-partitioned table like the demo's events.
func eventsDDL(name, coltype string) string {
	return `CREATE TABLE ` + name + ` (tenant_id bigint NOT NULL, id bigint NOT NULL, created_at ` + coltype + ` NOT NULL, payload text,
  PRIMARY KEY (tenant_id, id, created_at)) PARTITION BY RANGE (created_at)`
}

func daily(table string, premake int, retention, action string) catalog.PartitionSpec {
	return catalog.PartitionSpec{Table: table, Column: "created_at", Interval: "day", Premake: premake, Retention: retention, RetentionAction: action}
}

// pgCase is one behaviour shown on a shared cluster, on tables of its own.
type pgCase struct {
	name string
	run  func(e *env)
}

// runCases runs each case as a subtest on one real PostgreSQL 15 cluster, started once
// (a cluster per case would cost more than most cases), with the roles reader and
// appowner created.
func runCases(t *testing.T, cases []pgCase) {
	pg, ctx := onePG(t, 5*time.Minute)
	pg.Exec(ctx, `CREATE ROLE reader; CREATE ROLE appowner`)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(&env{t: t, pg: pg, ctx: ctx}) })
	}
}

// onePG starts one PostgreSQL 15 cluster for the test; the context bounds the test's work
// on it to d, so a stuck statement fails the test instead of hanging it.
func onePG(t *testing.T, d time.Duration) (*testenv.PG, context.Context) {
	t.Helper()
	pg := testenv.Postgres(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return pg, ctx
}

func connectShard(ctx context.Context, sh catalog.Shard) (*pgx.Conn, error) {
	return pgx.Connect(ctx, sh.DSN)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
