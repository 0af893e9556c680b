package pgmeta

import (
	"reflect"
	"strings"
	"testing"
)

// TestOrderParentsFirst: every table comes after the tables it references, the given
// order kept where the foreign keys leave it free; a cycle is an error naming it.
func TestOrderParentsFirst(t *testing.T) {
	tests := []struct {
		name    string
		tables  []string
		parents map[string][]string
		want    []string
		err     string
	}{
		{"no keys", []string{"b", "a"}, nil, []string{"b", "a"}, ""},
		{"children listed first", []string{"ads", "campaigns", "Billing.Invoices", "companies"},
			map[string][]string{"ads": {"campaigns"}, "campaigns": {"companies"}},
			[]string{"companies", "campaigns", "ads", "Billing.Invoices"}, ""},
		{"diamond", []string{"d", "b", "c", "a"}, map[string][]string{"d": {"b", "c"}, "b": {"a"}, "c": {"a"}},
			[]string{"a", "b", "c", "d"}, ""},
		{"cycle", []string{"a", "b"}, map[string][]string{"a": {"b"}, "b": {"a"}}, nil, "a -> b -> a form a cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := orderParentsFirst(tt.tables, tt.parents)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
