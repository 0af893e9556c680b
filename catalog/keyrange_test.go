package catalog

import (
	"encoding/json"
	"errors"
	"math"
	"sort"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyRange
		wantErr string
	}{
		{":", Full, ""},
		{":1000", Below(1000), ""},
		{"1000:5000", NewRange(1000, 5000), ""},
		{"5000:", From(5000), ""},
		{"-5:5", NewRange(-5, 5), ""},
		{"5:5", KeyRange{}, "empty"},
		{"9:1", KeyRange{}, "empty"},
		{"abc", KeyRange{}, "want LO:HI"},
		{"x:1", KeyRange{}, "lower bound"},
		{"1:99999999999999999999", KeyRange{}, "upper bound"},
	}
	for _, tt := range tests {
		got, err := ParseRange(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRange(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("ParseRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func TestKeyRangeOps(t *testing.T) {
	r := NewRange(10, 20)
	for _, tt := range []struct {
		k    int64
		want bool
	}{{9, false}, {10, true}, {19, true}, {20, false}} {
		if r.Contains(tt.k) != tt.want {
			t.Errorf("Contains(%d) = %v", tt.k, !tt.want)
		}
	}
	if !Full.Contains(math.MinInt64) || !Full.Contains(math.MaxInt64) {
		t.Error("Full must contain both ends of int64")
	}
	if !r.Overlaps(NewRange(19, 30)) || r.Overlaps(NewRange(20, 30)) || !From(0).Overlaps(r) {
		t.Error("Overlaps wrong")
	}
	if !Full.Covers(r) || r.Covers(NewRange(5, 15)) || !From(5).Covers(From(6)) || From(6).Covers(From(5)) {
		t.Error("Covers wrong")
	}
	a, b, err := From(0).Split(100)
	if err != nil || !a.Equal(NewRange(0, 100)) || !b.Equal(From(100)) {
		t.Errorf("Split = %v %v %v", a, b, err)
	}
	if _, _, err := r.Split(10); !errors.Is(err, ErrBadSplit) {
		t.Errorf("Split at lo: %v", err)
	}
	if _, _, err := r.Split(20); !errors.Is(err, ErrBadSplit) {
		t.Errorf("Split at hi: %v", err)
	}
	if got := r.SQL(`"tenant_id"`); got != `("tenant_id" >= 10 AND "tenant_id" < 20)` {
		t.Errorf("SQL = %s", got)
	}
	if got := Full.SQL("k"); got != "(k IS NOT NULL)" {
		t.Errorf("SQL full = %s", got)
	}
	if Full.Size() != math.Exp2(64) {
		t.Errorf("Full.Size = %v", Full.Size())
	}
}

func TestKeyHexSorts(t *testing.T) {
	keys := []int64{math.MinInt64, -1000, -1, 0, 1, 1000, math.MaxInt64}
	hex := make([]string, len(keys))
	for i, k := range keys {
		hex[i] = KeyHex(k)
		back, err := ParseKeyHex(hex[i])
		if err != nil || back != k {
			t.Errorf("ParseKeyHex(KeyHex(%d)) = %d, %v", k, back, err)
		}
	}
	if !sort.StringsAreSorted(hex) {
		t.Errorf("hex keys do not sort like their values: %v", hex)
	}
	if KeyHex(math.MinInt64) != "0000000000000000" {
		t.Errorf("KeyHex(min) = %s", KeyHex(math.MinInt64))
	}
}

func TestKeyRangeJSON(t *testing.T) {
	for _, r := range []KeyRange{Full, Below(5), NewRange(-3, 7), From(9)} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back KeyRange
		if err := json.Unmarshal(b, &back); err != nil || !back.Equal(r) {
			t.Errorf("round trip %s via %s = %v, %v", r, b, back, err)
		}
	}
	if b, _ := json.Marshal(Below(5)); string(b) != `{"lo":null,"hi":5}` {
		t.Errorf("JSON of :5 = %s", b)
	}
	var s KeyRange
	if err := json.Unmarshal([]byte(`"1:2"`), &s); err != nil || !s.Equal(NewRange(1, 2)) {
		t.Errorf("string form: %v %v", s, err)
	}
}
