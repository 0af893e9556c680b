package mover

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/internal/testenv"
)

func testRelation() *relation {
	tb := testTable()
	return &relation{name: "public.orders", dst: tb, where: []int{0, 1}, isWhere: []bool{true, true, false, false}, cols: []relColumn{
		{name: "tenant_id", typ: "bigint", pk: true}, {name: "id", typ: "bigint", pk: true}, {name: "note", typ: "text"}, {name: "total", typ: "numeric(12,2)"},
	}}
}

func TestApplySQL(t *testing.T) {
	rel := testRelation()
	for _, tc := range []struct{ got, want string }{
		{insertSQL(rel), `INSERT INTO "public"."orders" ("tenant_id", "id", "note", "total") VALUES ($1::bigint, $2::bigint, $3::text, $4::numeric(12,2))`},
		{groupSQL(&group{rel: rel, op: 'I'}, 2), `INSERT INTO "public"."orders" ("tenant_id", "id", "note", "total") VALUES ` +
			`($1::bigint, $2::bigint, $3::text, $4::numeric(12,2)), ($5::bigint, $6::bigint, $7::text, $8::numeric(12,2))`},
		{updateSQL(rel, []int{3}), `UPDATE "public"."orders" SET "total" = $1::numeric(12,2) WHERE "tenant_id" = $2::bigint AND "id" = $3::bigint`},
		{updateSQL(rel, []int{0, 1, 2}), `UPDATE "public"."orders" SET "tenant_id" = $1::bigint, "id" = $2::bigint, "note" = $3::text WHERE "tenant_id" = $4::bigint AND "id" = $5::bigint`},
		{groupSQL(&group{rel: rel, op: 'U', set: []int{3}}, 1), `UPDATE "public"."orders" SET "total" = $1::numeric(12,2) WHERE "tenant_id" = $2::bigint AND "id" = $3::bigint`},
		{groupSQL(&group{rel: rel, op: 'U', set: []int{2, 3}}, 2), `UPDATE "public"."orders" AS t SET "note" = v.s0, "total" = v.s1 FROM (VALUES ` +
			`($1::text, $2::numeric(12,2), $3::bigint, $4::bigint), ($5::text, $6::numeric(12,2), $7::bigint, $8::bigint)) AS v(s0, s1, w0, w1) ` +
			`WHERE t."tenant_id" = v.w0 AND t."id" = v.w1`},
		{deleteSQL(rel), `DELETE FROM "public"."orders" WHERE "tenant_id" = $1::bigint AND "id" = $2::bigint`},
		{groupSQL(&group{rel: rel, op: 'D'}, 2), `DELETE FROM "public"."orders" AS t USING (VALUES ($1::bigint, $2::bigint), ($3::bigint, $4::bigint)) AS v(w0, w1) ` +
			`WHERE t."tenant_id" = v.w0 AND t."id" = v.w1`},
		// The overlap of a resumed copy: upsert by primary key, delete if there.
		{groupSQL(&group{rel: rel, op: 'X'}, 1), `INSERT INTO "public"."orders" ("tenant_id", "id", "note", "total") VALUES ($1::bigint, $2::bigint, $3::text, $4::numeric(12,2))` +
			` ON CONFLICT ("tenant_id", "id") DO UPDATE SET "note" = EXCLUDED."note", "total" = EXCLUDED."total"`},
		{groupSQL(&group{rel: rel, op: 'Y'}, 1), `DELETE FROM "public"."orders" WHERE "tenant_id" = $1::bigint AND "id" = $2::bigint`},
	} {
		if tc.got != tc.want {
			t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
		}
	}
}

func describeGroups(ap *applier, names map[*relation]string) string {
	var got []string
	for _, g := range ap.groups {
		var rows []string
		for _, r := range g.rows {
			if r == nil {
				rows = append(rows, "-")
				continue
			}
			var vs []string
			for _, v := range r {
				vs = append(vs, string(v))
			}
			rows = append(rows, strings.Join(vs, ","))
		}
		got = append(got, fmt.Sprintf("%s:%c[%s]", names[g.rel], g.op, strings.Join(rows, " ")))
	}
	return strings.Join(got, " ")
}

func runSteps(replica bool, steps []step) *applier {
	ap := newApplier(nil, "t", replica, map[string]bool{}, nil, nil, nil)
	for _, s := range steps {
		vals := make([][]byte, len(s.vals))
		for i, v := range s.vals {
			vals[i] = []byte(v)
		}
		ap.addRow(s.rel, s.op, s.shape, s.set, vals, s.key, 1)
	}
	return ap
}

// TestGrouping: consecutive changes of a table with the same operation and columns on
// distinct rows share a statement; in replica mode other tables' changes do not break a
// group, otherwise the order of all changes is kept.
func TestGrouping(t *testing.T) {
	a, b := testRelation(), testRelation()
	b.dst = &table{Name: "b", Schema: "public", Rel: "b", PK: []string{"id"}}
	names := map[*relation]string{a: "a", b: "b"}
	steps := []step{
		{a, 'I', "", nil, "1", []string{"1"}}, {b, 'I', "", nil, "1", []string{"1"}}, {a, 'I', "", nil, "2", []string{"2"}},
		{a, 'U', "tt", nil, "3", []string{"3"}}, {a, 'U', "tt", nil, "4", []string{"4"}},
		{a, 'D', "", nil, "5", []string{"5"}}, {a, 'D', "", nil, "6", []string{"6"}},
		{a, 'U', "tu", nil, "7", []string{"7"}},                                          // other columns: a new statement
		{a, 'K', "tt", nil, "8", []string{"8"}}, {a, 'K', "tt", nil, "9", []string{"9"}}, // key changes: one statement each
		{b, 'D', "", nil, "2", []string{"2"}},
	}
	for _, tc := range []struct {
		replica bool
		want    string
	}{
		{true, "a:I[1 2] b:I[1] a:U[3 4] a:D[5 6] a:U[7] a:K[8] a:K[9] b:D[2]"},
		{false, "a:I[1] b:I[1] a:I[2] a:U[3 4] a:D[5 6] a:U[7] a:K[8] a:K[9] b:D[2]"},
	} {
		if got := describeGroups(runSteps(tc.replica, steps), names); got != tc.want {
			t.Errorf("replica=%v:\n got %s\nwant %s", tc.replica, got, tc.want)
		}
	}
}

// TestFold: later changes of a row fold into its pending change in replica mode.
func TestFold(t *testing.T) {
	a := testRelation()
	names := map[*relation]string{a: "a"}
	// Values: insert rows are (tenant, id, note, total); update rows are set values then key.
	ins := func(k, note, total string) step { return step{a, 'I', "", nil, k, []string{"7", k, note, total}} }
	upd := func(k, total string) step { return step{a, 'U', "ttut", []int{3}, k, []string{total, "7", k}} }
	del := func(k string) step { return step{a, 'D', "", nil, k, []string{"7", k}} }
	for _, tc := range []struct {
		name    string
		replica bool
		steps   []step
		want    string
	}{
		{"insert then updates", true, []step{ins("1", "n", "1.00"), upd("1", "2.00"), upd("1", "3.00")}, "a:I[7,1,n,3.00]"},
		{"updates", true, []step{upd("1", "2.00"), upd("2", "5.00"), upd("1", "3.00")}, "a:U[3.00,7,1 5.00,7,2]"},
		{"insert then delete", true, []step{ins("1", "n", "1.00"), ins("2", "m", "2.00"), del("1")}, "a:I[- 7,2,m,2.00]"},
		{"update then delete", true, []step{upd("1", "2.00"), del("1")}, "a:U[-] a:D[7,1]"},
		{"delete then insert keeps both", true, []step{del("1"), ins("1", "n", "1.00"), upd("1", "4.00")}, "a:D[7,1] a:I[7,1,n,4.00]"},
		{"no folding without replica mode", false, []step{ins("1", "n", "1.00"), upd("1", "2.00")}, "a:I[7,1,n,1.00] a:U[2.00,7,1]"},
	} {
		if got := describeGroups(runSteps(tc.replica, tc.steps), names); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	// A unique index besides the key: no folding.
	u := testRelation()
	u.dst.ExtraUnique = true
	ap := runSteps(true, []step{{u, 'I', "", nil, "1", []string{"7", "1", "n", "1"}}, {u, 'U', "ttut", []int{3}, "1", []string{"2", "7", "1"}}})
	if got := describeGroups(ap, map[*relation]string{u: "u"}); got != "u:I[7,1,n,1] u:U[2,7,1]" {
		t.Errorf("with another unique index: %s", got)
	}
}

func TestTextArray(t *testing.T) {
	got := textArray([]string{"1", `a"b\c`, "x,y}"})
	if want := `{"1","a\"b\\c","x,y}"}`; string(got) != want {
		t.Errorf("textArray = %s, want %s", got, want)
	}
}

type step struct {
	rel   *relation
	op    byte
	shape string
	set   []int
	key   string
	vals  []string
}

// TestUpdateColumnsIdentity: an update leaves a GENERATED ALWAYS identity column out of its
// SET list when the column is known unchanged, and becomes a replace when it changed or
// its old value is not in the stream.
func TestUpdateColumnsIdentity(t *testing.T) {
	// (tenant_id, id) is the identity; id and no are GENERATED ALWAYS identity columns.
	rel := &relation{name: "public.t", dst: testTable(), where: []int{0, 1}, isWhere: []bool{true, true, false, false}, overriding: true,
		cols: []relColumn{{name: "tenant_id", typ: "bigint", pk: true}, {name: "id", typ: "bigint", pk: true, identityAlways: true},
			{name: "no", typ: "bigint", identityAlways: true}, {name: "note", typ: "text"}}}
	keyOnly := tuple{txt("7"), txt("1"), {kind: 'n'}, {kind: 'n'}}
	for _, tc := range []struct {
		name      string
		old, new  tuple
		set       string
		shape     string
		replaced  bool
		statement string
	}{
		{"key kept, no unknown", nil, tuple{txt("7"), txt("1"), txt("3"), txt("x")}, "[2 3]", "kktt", true,
			`WITH d AS (DELETE FROM "public"."orders" WHERE "tenant_id" = $3::bigint AND "id" = $4::bigint RETURNING *) ` +
				`INSERT INTO "public"."orders" ("tenant_id", "id", "no", "note") OVERRIDING SYSTEM VALUE SELECT d."tenant_id", d."id", $1::bigint, $2::text FROM d`},
		{"key changed, id kept", keyOnly, tuple{txt("8"), txt("1"), txt("3"), {kind: 'u'}}, "[0 2]", "t=tu", true, ""},
		{"full row, nothing identity changed", tuple{txt("7"), txt("1"), txt("3"), txt("x")}, tuple{txt("7"), txt("1"), txt("3"), txt("y")}, "[0 3]", "t==t", false,
			`UPDATE "public"."orders" SET "tenant_id" = $1::bigint, "note" = $2::text WHERE "tenant_id" = $3::bigint AND "id" = $4::bigint`},
		{"full row, id changed", tuple{txt("7"), txt("1"), txt("3"), txt("x")}, tuple{txt("7"), txt("2"), txt("3"), txt("x")}, "[0 1 3]", "tt=t", true, ""},
	} {
		c := &change{rel: rel, op: 'U', oldTup: tc.old, newTup: tc.new}
		set, shape, replaced := c.updateColumns()
		if fmt.Sprint(set) != tc.set || shape != tc.shape || replaced != tc.replaced {
			t.Errorf("%s: set %v shape %q replace %v; want %s %q %v", tc.name, set, shape, replaced, tc.set, tc.shape, tc.replaced)
		}
		op := byte('K')
		if replaced {
			op = 'R'
		}
		if got := groupSQL(&group{rel: rel, op: op, set: set}, 1); tc.statement != "" && got != tc.statement {
			t.Errorf("%s: statement\n%s\nwant\n%s", tc.name, got, tc.statement)
		}
	}
	if got, want := insertSQL(rel), `INSERT INTO "public"."orders" ("tenant_id", "id", "no", "note") OVERRIDING SYSTEM VALUE VALUES ($1::bigint, $2::bigint, $3::bigint, $4::text)`; got != want {
		t.Errorf("insert:\n%s\nwant\n%s", got, want)
	}
}

// TestBacklogCommitsWhenTheSourceHasSentAll: between source transactions the apply ends its
// target transaction when the source says it has sent everything (a keepalive), or on a
// pause in the input while someone waits for a position; a pause alone, which in a backlog
// is mostly this process waiting for the CPU, commits nothing. The target holds each
// tenant's rows as applied, and a row of a tenant the stream never names as it was.
func TestBacklogCommitsWhenTheSourceHasSentAll(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `CREATE TABLE orders (tenant_id bigint, id bigint, note text, total numeric(12,2), PRIMARY KEY (tenant_id, id));
		INSERT INTO orders VALUES (9, 1, 'untouched', 9.00)`)
	pool := pg.Pool(ctx)
	if err := ensureProgressTable(ctx, pool); err != nil {
		t.Fatal(err)
	}
	conn, err := connect(ctx, target, pg.DSNApp(), "apply-test")
	if err != nil {
		t.Fatal(err)
	}
	defer closeQuietly(conn)
	replica, err := setupTargetSession(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	type commit struct {
		lsn pglogrepl.LSN
		txs int
	}
	commits := make(chan commit, 100)
	app := newApplier(conn, "t", replica, map[string]bool{}, nil, func(lsn pglogrepl.LSN, _ time.Time, txs int) {
		commits <- commit{lsn, txs}
	}, func(string, ...any) {})
	var eager atomic.Bool
	app.eager, app.quiet, app.interval = eager.Load, time.Hour, time.Hour
	in := make(chan []segment)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.run(ctx, in) }()
	defer func() {
		cancel()
		<-done
	}()
	rel := testRelation()
	lsn := pglogrepl.LSN(1000)
	tx := func(tenant, id int) []segment {
		lsn += 100
		row := tuple{txt(strconv.Itoa(tenant)), txt(strconv.Itoa(id)), txt("n"), txt("1.00")}
		return []segment{{begin: true, finalLSN: lsn - 10, changes: []change{{rel: rel, op: 'I', newTup: row, size: 40}}, commit: true, endLSN: lsn}}
	}
	for i := 1; i <= 40; i++ {
		in <- tx(1+i%2, i)
		time.Sleep(5 * time.Millisecond) // a pause longer than the linger
	}
	last := lsn
	select {
	case c := <-commits:
		t.Fatalf("committed at a pause in a backlog, with %d source transactions (at %s)", c.txs, c.lsn)
	case <-time.After(100 * time.Millisecond):
	}
	in <- []segment{{keepalive: true, walEnd: last + 50}}
	if c := waitCommit(t, commits); c.txs != 40 || c.lsn != last+50 {
		t.Fatalf("after the keepalive: a commit of %d transactions at %s, want 40 at %s", c.txs, c.lsn, last+50)
	}
	eager.Store(true) // someone waits for a position: a pause commits
	in <- tx(1, 100)
	if c := waitCommit(t, commits); c.txs != 1 || c.lsn != lsn {
		t.Fatalf("while someone waits: a commit of %d transactions at %s, want 1 at %s", c.txs, c.lsn, lsn)
	}
	got := texts(t, ctx, pool, `SELECT tenant_id || ':' || count(*) || ':' || max(note) FROM orders GROUP BY tenant_id ORDER BY tenant_id`)
	if want := []string{"1:21:n", "2:20:n", "9:1:untouched"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("target rows per tenant: %v, want %v", got, want)
	}
	if p, _, err := readProgress(ctx, pool, "t"); err != nil || p != lsn {
		t.Fatalf("reshard.progress: %s (%v), want %s", p, err, lsn)
	}
}

func waitCommit[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(time.Minute):
		t.Fatal("no commit within a minute")
	}
	panic("unreachable")
}
