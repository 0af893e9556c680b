package mover

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("x", 80)
	for _, tc := range []struct{ id, want string }{
		{"m1", "reshard_m1"},
		{"Move-42.a", "reshard_move_42_a"},
		{"tenant 7→8", "reshard_tenant_7_8"},
		{long, "reshard_" + long[:46] + "_"},
	} {
		slot, pub := Names(tc.id)
		if slot != pub {
			t.Errorf("Names(%q): slot %q != publication %q", tc.id, slot, pub)
		}
		if !strings.HasPrefix(slot, tc.want) || len(slot) > 63 {
			t.Errorf("Names(%q) = %q, want prefix %q and at most 63 bytes", tc.id, slot, tc.want)
		}
	}
	a, _ := Names(long)
	b, _ := Names(long + "y")
	if a == b {
		t.Errorf("two long ids share the name %q", a)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ID: "a", SourceDSN: "host=a", TargetDSN: "host=b", Key: "tenant_id", Tables: []string{"t", "s.u"}, Range: catalog.NewRange(1, 2)}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no id", func(c *Config) { c.ID = " " }, "migration id is empty"},
		{"no tables", func(c *Config) { c.Tables = nil }, "no tables"},
		{"bad table", func(c *Config) { c.Tables = []string{"a.b.c"} }, `"a.b.c"`},
		{"dup table", func(c *Config) { c.Tables = []string{"t", "t"} }, "listed twice"},
		{"empty range", func(c *Config) { c.Range = catalog.NewRange(3, 3) }, "is empty"},
		{"same db", func(c *Config) { c.TargetDSN = c.SourceDSN }, "same database"},
		{"budget", func(c *Config) { c.MaxConnections = 2 }, "below the minimum"},
		{"no key", func(c *Config) { c.Key = "" }, "sharding key"},
	} {
		c := ok
		tc.mod(&c)
		probs := c.validate()
		got := strings.Join(probs, "\n")
		if (tc.want == "") != (len(probs) == 0) || !strings.Contains(got, tc.want) {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCopyWorkersBudget(t *testing.T) {
	for _, tc := range []struct{ workers, max, want int }{
		{0, 0, 4}, {8, 8, 6}, {4, 3, 1}, {2, 10, 2},
	} {
		c := Config{Workers: tc.workers, MaxConnections: tc.max}.withDefaults()
		if got := c.copyWorkers(); got != tc.want {
			t.Errorf("workers %d, budget %d: %d copy workers, want %d", tc.workers, tc.max, got, tc.want)
		}
	}
}

func TestChunkCount(t *testing.T) {
	for _, tc := range []struct {
		est     int64
		workers int
		want    int
	}{
		{0, 4, 1},
		{1 << 20, 4, 1},
		{8 << 20, 4, 4},
		{100 << 20, 4, 8},
		{1 << 30, 4, 32},
		{1 << 40, 4, maxChunks},
	} {
		if got := chunkCount(tc.est, tc.workers); got != tc.want {
			t.Errorf("chunkCount(%d MB, %d) = %d, want %d", tc.est>>20, tc.workers, got, tc.want)
		}
	}
}

func TestBoundaries(t *testing.T) {
	keys := func(vals ...int) [][]string {
		var out [][]string
		for _, v := range vals {
			out = append(out, []string{"7", fmt.Sprint(v)})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		sample [][]string
		n      int
		want   string
	}{
		{"empty", nil, 4, "[]"},
		{"one chunk", keys(1, 2, 3), 1, "[]"},
		{"even", keys(1, 2, 3, 4, 5, 6, 7, 8), 4, "[[7 3] [7 5] [7 7]]"},
		{"duplicates collapse", keys(1, 1, 1, 1, 1, 1, 2, 2), 4, "[[7 2]]"},
		{"more chunks than keys", keys(1, 2), 8, "[[7 2]]"},
	} {
		if got := fmt.Sprint(boundaries(tc.sample, tc.n)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func testTable() *table {
	return &table{Name: "orders", Schema: "public", Rel: "orders", PK: []string{"tenant_id", "id"}, Columns: []column{
		{Name: "tenant_id", Type: "bigint"}, {Name: "id", Type: "bigint"}, {Name: "note", Type: "text"}, {Name: "total", Type: "numeric(12,2)"},
	}}
}

func TestChunkPredicate(t *testing.T) {
	tb := testTable()
	for _, tc := range []struct {
		lo, hi []string
		want   string
	}{
		{nil, nil, ""},
		{[]string{"5", "10"}, nil, `("tenant_id", "id") >= ('5'::bigint, '10'::bigint)`},
		{nil, []string{"5", "it's"}, `("tenant_id", "id") < ('5'::bigint, 'it''s'::bigint)`},
		{[]string{"1", "2"}, []string{"3", "4"}, `("tenant_id", "id") >= ('1'::bigint, '2'::bigint) AND ("tenant_id", "id") < ('3'::bigint, '4'::bigint)`},
	} {
		if got := (chunk{src: tb, lo: tc.lo, hi: tc.hi}).predicate(); got != tc.want {
			t.Errorf("predicate(%v, %v) = %s, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
	blocks := blockChunks(tb, tb, 3, 300)
	var preds []string
	for _, c := range blocks {
		preds = append(preds, c.predicate())
	}
	// An empty heap still gets one page per chunk.
	if got, want := strings.Join(preds, " | "), `ctid < '(1,0)'::tid | ctid >= '(1,0)'::tid AND ctid < '(2,0)'::tid | ctid >= '(2,0)'::tid`; got != want {
		t.Errorf("block chunks: %s, want %s", got, want)
	}
	single := &table{Schema: "public", Rel: "t", PK: []string{"id"}, Columns: []column{{Name: "id", Type: "uuid"}}}
	if got := (chunk{src: single, lo: []string{"x"}}).predicate(); got != `"id" >= 'x'::uuid` {
		t.Errorf("single-column predicate = %s", got)
	}
}

func TestPublicationSQL(t *testing.T) {
	tb := testTable()
	got := publicationSQL("reshard_m1", "tenant_id", catalog.NewRange(10, 20), []*table{tb, tb})
	want := `CREATE PUBLICATION "reshard_m1" FOR TABLE "public"."orders" WHERE ("tenant_id" >= 10 AND "tenant_id" < 20), ` +
		`TABLE "public"."orders" WHERE ("tenant_id" >= 10 AND "tenant_id" < 20) WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`
	if got != want {
		t.Errorf("publicationSQL =\n%s\nwant\n%s", got, want)
	}
}

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
	} {
		if tc.got != tc.want {
			t.Errorf("got\n%s\nwant\n%s", tc.got, tc.want)
		}
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

func TestNewRelation(t *testing.T) {
	tb := testTable()
	tables := map[string]*table{"public.orders": tb}
	msg := &pglogrepl.RelationMessage{RelationID: 9, Namespace: "public", RelationName: "orders", ReplicaIdentity: 'd', Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "tenant_id", Flags: 1}, {Name: "id", Flags: 1}, {Name: "note"}, {Name: "total"},
	}}
	rel, err := newRelation(msg, tables, "tenant_id")
	if err != nil || fmt.Sprint(rel.where) != "[0 1]" || rel.key != 0 {
		t.Fatalf("newRelation = %+v, %v", rel, err)
	}
	full := *msg
	full.ReplicaIdentity = 'f'
	full.Columns = []*pglogrepl.RelationMessageColumn{{Name: "tenant_id", Flags: 1}, {Name: "id", Flags: 1}, {Name: "note", Flags: 1}, {Name: "total", Flags: 1}}
	if rel, err := newRelation(&full, tables, "tenant_id"); err != nil || fmt.Sprint(rel.where) != "[0 1]" {
		t.Errorf("REPLICA IDENTITY FULL must identify rows by the primary key: %+v, %v", rel, err)
	}
	// PostgreSQL 15 describes a leaf partition too, although its changes name the root:
	// only a change of a relation outside the move is an error.
	other := *msg
	other.RelationName = "orders_p1"
	other.RelationID = 10
	leaf, err := newRelation(&other, tables, "tenant_id")
	if err != nil {
		t.Fatalf("a Relation message outside the move: %v", err)
	}
	ins := encodeChange('I', 10, 0, nil, tuple{})
	if _, err := decodeChange(ins, map[uint32]*relation{10: leaf}); err == nil || transient(err) {
		t.Errorf("a change of a relation outside the move must be a fatal error: %v", err)
	}
	altered := *msg
	altered.Columns = append(append([]*pglogrepl.RelationMessageColumn{}, msg.Columns...), &pglogrepl.RelationMessageColumn{Name: "added"})
	if _, err := newRelation(&altered, tables, "tenant_id"); err == nil || !strings.Contains(err.Error(), `"added"`) {
		t.Errorf("a column missing on the target: %v", err)
	}
}

// encodeChange writes a pgoutput protocol 1 Insert, Update or Delete message.
func encodeChange(op byte, rel uint32, oldKind byte, old, new tuple) []byte {
	b := []byte{op}
	b = binary.BigEndian.AppendUint32(b, rel)
	put := func(t tuple) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(t)))
		for _, c := range t {
			b = append(b, c.kind)
			if c.kind == 't' || c.kind == 'b' {
				b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
				b = append(b, c.data...)
			}
		}
	}
	if old != nil {
		b = append(b, oldKind)
		put(old)
	}
	if new != nil {
		b = append(b, 'N')
		put(new)
	}
	return b
}

func txt(s string) col { return col{kind: 't', data: []byte(s)} }

func TestDecodeChange(t *testing.T) {
	rel := testRelation()
	rels := map[uint32]*relation{7: rel}
	null, toast := col{kind: 'n'}, col{kind: 'u'}
	for _, tc := range []struct {
		name string
		msg  []byte
		want string // op, old, new; or the error
	}{
		{"insert", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")}), "I [] [5 1 <n> 9.50]"},
		{"update", encodeChange('U', 7, 0, nil, tuple{txt("5"), txt("1"), toast, txt("1")}), "U [] [5 1 <u> 1]"},
		{"update of the key", encodeChange('U', 7, 'K', tuple{txt("5"), txt("1"), null, null}, tuple{txt("6"), txt("1"), toast, txt("1")}), "U [5 1 <n> <n>] [6 1 <u> 1]"},
		{"delete", encodeChange('D', 7, 'K', tuple{txt("5"), txt("1"), null, null}, nil), "D [5 1 <n> <n>] []"},
		{"delete without key", encodeChange('D', 7, 0, nil, tuple{txt("5"), txt("1"), null, null}), "a DELETE arrived without its key"},
		{"unknown relation", encodeChange('I', 8, 0, nil, tuple{txt("5"), txt("1"), null, null}), "before its Relation message"},
		{"wrong width", encodeChange('I', 7, 0, nil, tuple{txt("5")}), "has 1 columns"},
		{"binary", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, {kind: 'b', data: []byte{1}}}), "binary format"},
		{"truncated", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")})[:20], "cannot decode"},
	} {
		c, err := decodeChange(tc.msg, rels)
		got := ""
		if err != nil {
			got = err.Error()
			if transient(err) {
				t.Errorf("%s: a decode error must be fatal", tc.name)
			}
		} else {
			show := func(tp tuple) string {
				var p []string
				for _, v := range tp {
					if v.kind == 't' {
						p = append(p, string(v.data))
					} else {
						p = append(p, "<"+string(v.kind)+">")
					}
				}
				return "[" + strings.Join(p, " ") + "]"
			}
			got = fmt.Sprintf("%c %s %s", c.op, show(c.oldTup), show(c.newTup))
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	// The change owns its bytes: the receive buffer is reused.
	msg := encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")})
	c, _ := decodeChange(msg, rels)
	for i := range msg {
		msg[i] = 'x'
	}
	if string(c.newTup[3].data) != "9.50" {
		t.Errorf("decoded values alias the message buffer")
	}
}

func TestChangeWhereValues(t *testing.T) {
	rel := testRelation()
	null, toast := col{kind: 'n'}, col{kind: 'u'}
	c := change{rel: rel, op: 'U', newTup: tuple{txt("7"), txt("1"), toast, txt("9.50")}}
	if v, err := c.whereValues(); err != nil || fmt.Sprintf("%s", v) != "[7 1]" {
		t.Errorf("key from the new tuple: %s, %v", v, err)
	}
	c.oldTup = tuple{txt("6"), txt("1"), null, null}
	if v, err := c.whereValues(); err != nil || fmt.Sprintf("%s", v) != "[6 1]" {
		t.Errorf("key from the old tuple: %s, %v", v, err)
	}
	bad := change{rel: rel, op: 'U', newTup: tuple{toast, txt("1"), null, null}}
	if _, err := bad.whereValues(); err == nil {
		t.Error("a key column without a value must be an error")
	}
}

func TestTextArray(t *testing.T) {
	got := textArray([]string{"1", `a"b\c`, "x,y}"})
	if want := `{"1","a\"b\\c","x,y}"}`; string(got) != want {
		t.Errorf("textArray = %s, want %s", got, want)
	}
}

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{&pgconn.PgError{Code: "57P01"}, true},
		{&pgconn.PgError{Code: "08006"}, true},
		{&pgconn.PgError{Code: "55006"}, true},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "42704"}, false},
		{fatalf("x"), false},
		{fmt.Errorf("wrapped: %w", fatalf("x")), false},
		{context.Canceled, false},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "57P03"}), true},
		{errors.New("dial tcp: connection refused"), true},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestStages(t *testing.T) {
	a := &table{Name: "a"}
	b := &table{Name: "b"}
	per := [][]chunk{{{src: a, index: 0, estBytes: 1}, {src: a, index: 1, estBytes: 1}}, {{src: b, index: 0, estBytes: 5}}}
	if s := stages(per, false); len(s) != 2 || s[0][0].src != a {
		t.Errorf("without replica mode tables load one by one, parents first: %v", s)
	}
	s := stages(per, true)
	if len(s) != 1 || len(s[0]) != 3 || s[0][0].src != b || s[0][1].src != a || s[0][2].index != 1 {
		t.Errorf("replica mode: one stage, tables interleaved, largest first: %+v", s)
	}
}

func TestPreflightErrorMessage(t *testing.T) {
	e := &PreflightError{Problems: []string{"source: x", "target: y"}}
	if got := e.Error(); !strings.Contains(got, "2 problems") || !strings.Contains(got, "- source: x\n  - target: y") {
		t.Errorf("PreflightError = %q", got)
	}
}

// TestRelayForward feeds forwardData a source stream made by hand: rows of every size
// (one larger than the read buffer), split anywhere, with a notice amid them. The target
// must receive CopyData messages whose payloads add up to the rows, byte for byte, and the
// CopyDone after them must be left unread.
func TestRelayForward(t *testing.T) {
	msg := func(typ byte, body []byte) []byte {
		out := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
		return append(out, body...)
	}
	var stream, want []byte
	for i, n := range []int{0, 1, 7, 100, relayBufSize + 12345, 3, 64 << 10} {
		row := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, row...)
		stream = append(stream, msg('d', row)...)
		if i == 3 {
			stream = append(stream, msg('N', []byte("SNOTICE\x00Mhello\x00\x00"))...)
		}
	}
	stream = append(stream, msg('c', nil)...)
	stream = append(stream, msg('C', []byte("COPY 7\x00"))...)

	for _, split := range []int{1, 3, 5, 4096, len(stream)} {
		srcEnd, srcConn := net.Pipe()
		dstConn, dstEnd := net.Pipe()
		go func() {
			for rest := stream; len(rest) > 0; {
				k := min(split, len(rest))
				if _, err := srcEnd.Write(rest[:k]); err != nil {
					return
				}
				rest = rest[k:]
			}
		}()
		got := make(chan []byte)
		go func() {
			var payload []byte
			r := &msgReader{conn: dstEnd, buf: make([]byte, 0, 1024)}
			for {
				typ, body, err := r.next()
				if err != nil || typ != 'd' {
					got <- payload
					return
				}
				payload = append(payload, body...)
			}
		}()
		var metered int
		sr := &msgReader{conn: srcConn, buf: make([]byte, 0, relayBufSize)}
		err := sr.forwardData(context.Background(), dstConn, func(_ context.Context, n int) error { metered += n; return nil }, func() bool { return false })
		if err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		typ, _, err := sr.next()
		if err != nil || typ != 'c' {
			t.Fatalf("split %d: after the data: %q, %v", split, typ, err)
		}
		dstConn.Close()
		if p := <-got; !bytes.Equal(p, want) {
			t.Errorf("split %d: target got %d bytes, want %d", split, len(p), len(want))
		}
		if metered != len(want) {
			t.Errorf("split %d: metered %d bytes, want %d", split, metered, len(want))
		}
		srcEnd.Close()
	}
}
