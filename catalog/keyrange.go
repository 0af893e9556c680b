package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// KeyRange is the half-open interval [Lo, Hi) of sharding keys. Lo == math.MinInt64 means
// unbounded below; HiInf means unbounded above (Hi is then ignored). The zero value with
// HiInf set is the whole key line.
//
// On the command line a range is "LO:HI" with an empty side for unbounded (":1000",
// "1000:5000", "5000:"); in JSON it is {"lo": n|null, "hi": n|null}.
type KeyRange struct {
	Lo    int64
	Hi    int64
	HiInf bool
}

// Full is the whole int64 key line.
var Full = KeyRange{Lo: math.MinInt64, HiInf: true}

// NewRange returns [lo, hi).
func NewRange(lo, hi int64) KeyRange { return KeyRange{Lo: lo, Hi: hi} }

// From returns [lo, +inf).
func From(lo int64) KeyRange { return KeyRange{Lo: lo, HiInf: true} }

// Below returns (-inf, hi).
func Below(hi int64) KeyRange { return KeyRange{Lo: math.MinInt64, Hi: hi} }

// LoUnbounded reports whether the range has no lower bound.
func (r KeyRange) LoUnbounded() bool { return r.Lo == math.MinInt64 }

// Empty reports whether the range holds no key.
func (r KeyRange) Empty() bool { return !r.HiInf && r.Hi <= r.Lo }

// Contains reports whether k is in the range.
func (r KeyRange) Contains(k int64) bool { return k >= r.Lo && (r.HiInf || k < r.Hi) }

// Overlaps reports whether the ranges share a key.
func (r KeyRange) Overlaps(o KeyRange) bool {
	if r.Empty() || o.Empty() {
		return false
	}
	return (r.HiInf || o.Lo < r.Hi) && (o.HiInf || r.Lo < o.Hi)
}

// Covers reports whether every key of o is in r.
func (r KeyRange) Covers(o KeyRange) bool {
	if o.Empty() {
		return true
	}
	if o.Lo < r.Lo {
		return false
	}
	if r.HiInf {
		return true
	}
	return !o.HiInf && o.Hi <= r.Hi
}

// Equal reports whether the two ranges are the same interval.
func (r KeyRange) Equal(o KeyRange) bool {
	return r.Lo == o.Lo && r.HiInf == o.HiInf && (r.HiInf || r.Hi == o.Hi)
}

// Size is the number of keys in the range as a float (the full line is 2^64).
func (r KeyRange) Size() float64 {
	hi := float64(math.MaxInt64) + 1
	if !r.HiInf {
		hi = float64(r.Hi)
	}
	return hi - float64(r.Lo)
}

// ErrBadSplit is returned by Split for a split key outside the open interval (Lo, Hi).
var ErrBadSplit = errors.New("split key must be strictly inside the range")

// Split cuts the range at key into [Lo, at) and [at, Hi).
func (r KeyRange) Split(at int64) (KeyRange, KeyRange, error) {
	if at <= r.Lo || (!r.HiInf && at >= r.Hi) {
		return KeyRange{}, KeyRange{}, fmt.Errorf("split %s at %d: %w", r, at, ErrBadSplit)
	}
	left := KeyRange{Lo: r.Lo, Hi: at}
	right := KeyRange{Lo: at, Hi: r.Hi, HiInf: r.HiInf}
	return left, right, nil
}

// String formats the range as "LO:HI" with empty unbounded sides.
func (r KeyRange) String() string {
	var b strings.Builder
	if !r.LoUnbounded() {
		b.WriteString(strconv.FormatInt(r.Lo, 10))
	}
	b.WriteByte(':')
	if !r.HiInf {
		b.WriteString(strconv.FormatInt(r.Hi, 10))
	}
	return b.String()
}

// ParseRange parses "LO:HI" (either side may be empty for unbounded).
func ParseRange(s string) (KeyRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return KeyRange{}, fmt.Errorf("range %q: want LO:HI, e.g. 1000:5000, :1000 or 5000:", s)
	}
	r := KeyRange{Lo: math.MinInt64, HiInf: true}
	var err error
	if lo = strings.TrimSpace(lo); lo != "" {
		if r.Lo, err = strconv.ParseInt(lo, 10, 64); err != nil {
			return KeyRange{}, fmt.Errorf("range %q: lower bound %q is not a 64-bit integer", s, lo)
		}
	}
	if hi = strings.TrimSpace(hi); hi != "" {
		r.HiInf = false
		if r.Hi, err = strconv.ParseInt(hi, 10, 64); err != nil {
			return KeyRange{}, fmt.Errorf("range %q: upper bound %q is not a 64-bit integer", s, hi)
		}
	}
	if r.Empty() {
		return KeyRange{}, fmt.Errorf("range %q is empty: the lower bound must be below the upper bound", s)
	}
	return r, nil
}

// SQL returns a predicate selecting the range on column col (already quoted), e.g.
// `("tenant_id" >= 10 AND "tenant_id" < 20)`; the full line gives `(col IS NOT NULL)`.
func (r KeyRange) SQL(col string) string {
	var parts []string
	if !r.LoUnbounded() {
		parts = append(parts, fmt.Sprintf("%s >= %d", col, r.Lo))
	}
	if !r.HiInf {
		parts = append(parts, fmt.Sprintf("%s < %d", col, r.Hi))
	}
	if len(parts) == 0 {
		return "(" + col + " IS NOT NULL)"
	}
	return "(" + strings.Join(parts, " AND ") + ")"
}

// KeyHex is the etcd key component of a range start: uint64(lo) XOR 1<<63 as 16 hex
// digits, so lexical order of keys is numeric order of lo.
func KeyHex(lo int64) string { return fmt.Sprintf("%016x", uint64(lo)^(1<<63)) }

// ParseKeyHex is the inverse of KeyHex.
func ParseKeyHex(s string) (int64, error) {
	u, err := strconv.ParseUint(s, 16, 64)
	if err != nil || len(s) != 16 {
		return 0, fmt.Errorf("bad range key %q: want 16 hex digits", s)
	}
	return int64(u ^ (1 << 63)), nil
}

type keyRangeJSON struct {
	Lo *int64 `json:"lo"`
	Hi *int64 `json:"hi"`
}

// MarshalJSON writes {"lo": n|null, "hi": n|null}.
func (r KeyRange) MarshalJSON() ([]byte, error) {
	var j keyRangeJSON
	if !r.LoUnbounded() {
		lo := r.Lo
		j.Lo = &lo
	}
	if !r.HiInf {
		hi := r.Hi
		j.Hi = &hi
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads {"lo": n|null, "hi": n|null} or the string form "LO:HI".
func (r *KeyRange) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		kr, err := ParseRange(s)
		if err != nil {
			return err
		}
		*r = kr
		return nil
	}
	var j keyRangeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = KeyRange{Lo: math.MinInt64, HiInf: true}
	if j.Lo != nil {
		r.Lo = *j.Lo
	}
	if j.Hi != nil {
		r.Hi, r.HiInf = *j.Hi, false
	}
	return nil
}
