package bytesize_test

import (
	"testing"

	"github.com/reshard/reshard/internal/bytesize"
)

// TestFormatUsesBinaryUnits: counts under a KiB are whole bytes, larger ones one decimal
// of the largest binary unit they reach.
func TestFormatUsesBinaryUnits(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"}, {-5, "-5 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{1<<20 - 1, "1024.0 KiB"}, {1 << 20, "1.0 MiB"}, {5 << 30, "5.0 GiB"}, {3 << 40, "3.0 TiB"},
		{1 << 62, "4.0 EiB"},
	}
	for _, tt := range tests {
		if got := bytesize.Format(tt.in); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestParseReadsPlainCountsAndUnits: a plain count, or a number with a decimal (kB..TB) or
// binary (KiB..TiB) unit in any case; negative, unreadable or overflowing sizes are errors.
func TestParseReadsPlainCountsAndUnits(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"", 0, false},
		{"2000000000", 2000000000, false},
		{"50GiB", 50 << 30, false},
		{"1.5 KiB", 1536, false},
		{"500MB", 500e6, false},
		{"500mb", 500e6, false},
		{" 2 tib ", 2 << 40, false},
		{"7b", 7, false},
		{"-1", 0, true},
		{"lots", 0, true},
		{"1e30", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		got, err := bytesize.Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestValueIsAFlagOfSizes: as a flag value a size reads what Parse reads, shows its value
// in the largest binary unit that divides it (so --help shows "1MiB", not 1048576), and
// refuses a bad size without changing the value.
func TestValueIsAFlagOfSizes(t *testing.T) {
	tests := []struct {
		set     string
		want    int64
		show    string
		wantErr bool
	}{
		{"1MiB", 1 << 20, "1MiB", false},
		{"50MB", 50e6, "50000000", false},
		{"1048576", 1 << 20, "1MiB", false},
		{"3GiB", 3 << 30, "3GiB", false},
		{"0", 0, "0", false},
		{"1536", 1536, "1536", false},
		{"50XB", 7, "7", true},
		{"-1MiB", 7, "7", true},
	}
	for _, tt := range tests {
		n := int64(7)
		v := bytesize.NewValue(&n)
		err := v.Set(tt.set)
		if (err != nil) != tt.wantErr || n != tt.want || v.String() != tt.show {
			t.Errorf("Set(%q): value %d shown %q, error %v; want %d shown %q, error %v", tt.set, n, v.String(), err, tt.want, tt.show, tt.wantErr)
		}
		if v.Type() != "size" {
			t.Errorf("Type() = %q, want size", v.Type())
		}
	}
}
