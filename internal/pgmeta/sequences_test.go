package pgmeta

import (
	"strings"
	"testing"
)

// TestSequenceMismatchesNameSequenceAndFix: each way a target's sequence cannot take the
// source's value is one line naming the sequence and the statement that fixes it; a
// matching one, or a target already further along, is no problem.
func TestSequenceMismatchesNameSequenceAndFix(t *testing.T) {
	up := Sequence{Name: "public.ids", Type: "bigint", Increment: 1, Min: 1, Max: 1 << 40, Last: 500, Used: true}
	down := Sequence{Name: "public.downs", Type: "bigint", Increment: -5, Min: -100000, Max: 0, Last: -495, Used: true}
	for _, tt := range []struct {
		name string
		src  Sequence
		dst  map[string]Sequence
		want string // "" for no problem
	}{
		{"same", up, map[string]Sequence{up.Name: up}, ""},
		{"same descending, target further down", down, map[string]Sequence{down.Name: {Name: down.Name, Type: "bigint", Increment: -1, Min: -100000, Max: 0, Last: -9000, Used: true}}, ""},
		{"missing", down, map[string]Sequence{}, "sequence public.downs does not exist: create it as on the source (CREATE SEQUENCE public.downs AS bigint INCREMENT BY -5 MINVALUE -100000 MAXVALUE 0)"},
		{"reversed", down, map[string]Sequence{down.Name: {Name: down.Name, Type: "bigint", Increment: 1, Min: 1, Max: 100}}, "sequence public.downs is descending on the source but ascending on the target: ALTER SEQUENCE public.downs INCREMENT BY -5 as on the source"},
		{"type", up, map[string]Sequence{up.Name: {Name: up.Name, Type: "integer", Increment: 1, Min: 1, Max: 1<<31 - 1}}, "sequence public.ids is bigint on the source but integer on the target: ALTER SEQUENCE public.ids AS bigint as on the source"},
		{"bounds", up, map[string]Sequence{up.Name: {Name: up.Name, Type: "bigint", Increment: 1, Min: 1, Max: 100}}, "sequence public.ids is at 500 on the source, outside the target's bounds 1..100"},
	} {
		got := SequenceMismatches([]Sequence{tt.src}, tt.dst)
		switch {
		case tt.want == "" && len(got) != 0:
			t.Errorf("%s: %q; want no problem", tt.name, got)
		case tt.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.want)):
			t.Errorf("%s: %q; want one line starting %q", tt.name, got, tt.want)
		}
	}
}
