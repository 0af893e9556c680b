package mover

import "testing"

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
