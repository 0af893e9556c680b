package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Format is a byte count for people, in binary units: "512 B", "1.5 KiB", "3.2 GiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// units are the suffixes Parse reads, longest first so "kib" is not read as "b".
var units = []struct {
	suffix string
	mult   float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12}, {"b", 1},
}

// Parse reads a size: a plain byte count, or a number with a unit (kB, MB, GB, TB in powers
// of 1000; KiB, MiB, GiB, TiB in powers of 1024; B), in any case. Empty is 0.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	num, mult := strings.ToLower(t), 1.0
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*mult > math.MaxInt64 {
		return 0, fmt.Errorf("size %q: write a byte count or a number with a unit, such as 50GiB or 500MB", s)
	}
	return int64(math.Round(f * mult)), nil
}

// Value is a size flag (it implements pflag.Value): it reads what Parse reads, so
// `--max-cutover-lag 1MiB` works as `--catchup-timeout 30s` does.
type Value struct{ p *int64 }

// NewValue is a flag value that stores into p, whose current value is the default.
func NewValue(p *int64) *Value { return &Value{p: p} }

// Set parses s; a bad size leaves the value as it was.
func (v *Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// String shows the value in the largest binary unit that divides it exactly ("1MiB"), or
// as a plain count, so that --help shows a default as one would type it.
func (v *Value) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	n := *v.p
	for _, u := range []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Type names the value's kind in --help.
func (v *Value) Type() string { return "size" }
