package catalog

import (
	"errors"
	"reflect"
	"testing"
)

func TestKeyspaceBuildsOneExpressionPerTable(t *testing.T) {
	r := NewRange(-5, 7)
	tests := []struct {
		name  string
		ks    Keyspace
		table string
		alias string
		want  string
	}{
		{"range, default column", RangeOn("tenant_id"), "orders", "", `("tenant_id" >= -5 AND "tenant_id" < 7)`},
		{"range, alias", RangeOn("tenant_id"), "orders", "x", `(x."tenant_id" >= -5 AND x."tenant_id" < 7)`},
		{"range, own column", Keyspace{Key: "company_id", Columns: map[string]string{"companies": "id"}}, "companies", "", `("id" >= -5 AND "id" < 7)`},
		{"range, other table keeps the default", Keyspace{Key: "company_id", Columns: map[string]string{"companies": "id"}}, "campaigns", "", `("company_id" >= -5 AND "company_id" < 7)`},
		{"hash bigint", Keyspace{Key: "tenant_id", Distribution: DistHash}, "orders", "", `(hashint8extended("tenant_id", 0) >= -5 AND hashint8extended("tenant_id", 0) < 7)`},
		{"hash uuid, mixed case", Keyspace{Key: "OrgId", Type: KeyUUID, Distribution: DistHash}, "x", "t", `(uuid_hash_extended(t."OrgId", 0) >= -5 AND uuid_hash_extended(t."OrgId", 0) < 7)`},
		{"hash text", Keyspace{Key: "slug", Type: KeyText, Distribution: DistHash}, "x", "", `(hashtextextended("slug", 0) >= -5 AND hashtextextended("slug", 0) < 7)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ks.Pred(tt.table, tt.alias, r); got != tt.want {
				t.Errorf("Pred = %s\nwant   %s", got, tt.want)
			}
		})
	}
	if got := (Keyspace{Key: "k", Distribution: DistHash}).Pred("t", "", Full); got != `(hashint8extended("k", 0) IS NOT NULL)` {
		t.Errorf("Pred of the full line = %s", got)
	}
}

func TestKeyspacePositionIsTheKeyOrItsHash(t *testing.T) {
	u, _ := ParseKey(KeyUUID, "0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d")
	tests := []struct {
		ks      Keyspace
		key     Key
		want    int64
		wantErr bool
	}{
		{RangeOn("k"), BigintKey(42), 42, false},
		{Keyspace{Key: "k", Type: KeyInteger}, BigintKey(42), 42, false},
		{Keyspace{Key: "k", Distribution: DistHash}, BigintKey(42), HashBigint(42), false},
		{Keyspace{Key: "k", Type: KeyUUID, Distribution: DistHash}, u, HashKey(u), false},
		{Keyspace{Key: "k", Type: KeyText, Distribution: DistHash}, TextKey("acme"), HashText("acme"), false},
		{Keyspace{Key: "k", Type: KeyUUID, Distribution: DistHash}, BigintKey(1), 0, true},
		{Keyspace{Key: "k", Type: KeyUUID}, u, 0, true}, // range on a uuid
	}
	for _, tt := range tests {
		got, err := tt.ks.Position(tt.key)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%+v Position(%s) = %d, %v; want %d, error %v", tt.ks, tt.key, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadKey) {
			t.Errorf("error %v does not wrap ErrBadKey", err)
		}
	}
	if got, err := (Keyspace{Key: "k", Type: KeyText, Distribution: DistHash}).PositionOfText("o'brien"); err != nil || got != HashText("o'brien") {
		t.Errorf("PositionOfText = %d, %v", got, err)
	}
}

func TestSplitTableNameTakesNamesExactly(t *testing.T) {
	tests := []struct {
		in     string
		want   []string
		quoted string
	}{
		{"orders", []string{"orders"}, `"orders"`},
		{"billing.invoices", []string{"billing", "invoices"}, `"billing"."invoices"`},
		{"Billing.Invoices", []string{"Billing", "Invoices"}, `"Billing"."Invoices"`},
		{`billing."Line.Items"`, []string{"billing", "Line.Items"}, `"billing"."Line.Items"`},
		{`"a""b".c`, []string{`a"b`, "c"}, `"a""b"."c"`},
		{"a.b.c", nil, ""},
		{"a.", nil, ""},
		{".a", nil, ""},
		{"", nil, ""},
		{`"open`, nil, ""},
		{`"x"y`, nil, ""},
	}
	for _, tt := range tests {
		got, err := SplitTableName(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("SplitTableName(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitTableName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		q := QuoteTable(tt.in)
		if q != tt.quoted {
			t.Errorf("QuoteTable(%q) = %s, want %s", tt.in, q, tt.quoted)
		}
		if again := QuoteTable(q); again != q {
			t.Errorf("QuoteTable is not idempotent: %s -> %s", q, again)
		}
	}
}

func TestKeyTypeHoldsColumnTypes(t *testing.T) {
	tests := []struct {
		kt   KeyType
		col  string
		want bool
	}{
		{KeyBigint, "bigint", true},
		{KeyBigint, "integer", true},
		{KeyInteger, "bigint", true},
		{KeyBigint, "uuid", false},
		{KeyUUID, "uuid", true},
		{KeyText, "text", true},
		{KeyText, "character varying(20)", true},
		{KeyText, "character(8)", false},
		{KeyText, "uuid", false},
		{KeyUUID, "numeric", false},
	}
	for _, tt := range tests {
		if got := tt.kt.Holds(tt.col); got != tt.want {
			t.Errorf("%s.Holds(%q) = %v, want %v", tt.kt, tt.col, got, tt.want)
		}
	}
}

// TestKeyspaceOrKeyFillsOnlyAMissingKey: a bare key column is the keyspace's key only when
// the keyspace names none; its type, distribution and table keys are kept either way.
func TestKeyspaceOrKeyFillsOnlyAMissingKey(t *testing.T) {
	hashed := Keyspace{Type: KeyUUID, Distribution: DistHash, Columns: map[string]string{"ads": "company_id"}}
	for _, tc := range []struct {
		name string
		ks   Keyspace
		key  string
		want string
	}{
		{"no key in the keyspace", hashed, "id", "id"},
		{"the keyspace's key wins", Keyspace{Key: "tenant_id"}, "id", "tenant_id"},
		{"neither names one", Keyspace{}, "", ""},
	} {
		got := tc.ks.OrKey(tc.key)
		if got.Key != tc.want || got.Type != tc.ks.Type || got.Distribution != tc.ks.Distribution || !reflect.DeepEqual(got.Columns, tc.ks.Columns) {
			t.Errorf("%s: %+v.OrKey(%q) = %+v, want key %q and the rest kept", tc.name, tc.ks, tc.key, got, tc.want)
		}
	}
}
