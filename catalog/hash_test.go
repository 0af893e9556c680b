package catalog

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestHashKeyGoldenValues pins values PostgreSQL 15 computed (SELECT hashint8extended(v, 0)
// etc.), so the hash is checked without a server too; TestHashKeyMatchesPostgres checks many
// more keys against a live one.
func TestHashKeyGoldenValues(t *testing.T) {
	x1025 := strings.Repeat("x", 1025)
	for _, c := range []struct {
		key  Key
		want int64
	}{
		{BigintKey(0), 4154612158245552303},
		{BigintKey(1), -3670598878359251130},
		{BigintKey(-1), -1888257769727981238},
		{BigintKey(math.MaxInt32), -9109110466470504941},
		// The fold: 2^31, -2^31 and MaxInt64 share a hash, so do 2^32 and 1.
		{BigintKey(1 << 31), 1977219185673256887},
		{BigintKey(math.MinInt32), 1977219185673256887},
		{BigintKey(math.MinInt32 - 1), -9109110466470504941},
		{BigintKey(1 << 32), -3670598878359251130},
		{BigintKey(math.MaxInt64), 1977219185673256887},
		{BigintKey(math.MinInt64), -9109110466470504941},
		{IntegerKey(0), 4154612158245552303},
		{IntegerKey(-1), -1888257769727981238},
		{IntegerKey(math.MaxInt32), -9109110466470504941},
		{IntegerKey(math.MinInt32), 1977219185673256887},
		{SmallintKey(-1), -1888257769727981238},
		{SmallintKey(math.MaxInt16), 1790040721271588170},
		{SmallintKey(math.MinInt16), 8455483389771436374},
		{mustKey(t, KeyUUID, "00000000-0000-0000-0000-000000000000"), -6859010066814654381},
		{mustKey(t, KeyUUID, "ffffffff-ffff-ffff-ffff-ffffffffffff"), 293445543803463785},
		{mustKey(t, KeyUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 7543054272012930821},
		{TextKey(""), -6939563903564495251},
		{TextKey("a"), 3591986179850072241},
		{TextKey("tenant-1"), -5960342201233910903},
		{TextKey("abcdefghijk"), 3112909444737856467},   // 11 bytes: the longest tail
		{TextKey("abcdefghijkl"), -7556637188122330412}, // one block, no tail
		{TextKey("abcdefghijklm"), 8871624171452417744},
		{TextKey("Straße"), -4813572887602676623},
		{TextKey("e\u0301"), 906497045993010187},
		{TextKey("👩‍👩‍👧‍👦"), -1741539813767467067},
		{TextKey(x1025), 7352833377640039686},
	} {
		if got := HashKey(c.key); got != c.want {
			t.Errorf("HashKey(%s %s) = %d, PostgreSQL says %d", c.key.Type(), quoteKey(c.key), got, c.want)
		}
	}
	// hashtextextended('tenant-1', 42), (…, -1) and hashtext('tenant-1').
	for _, c := range []struct {
		got, want int64
	}{
		{int64(hashBytesExtended("tenant-1", 42)), 7110104488868927152},
		{int64(hashBytesExtended("tenant-1", math.MaxUint64)), -3565372311632890888},
		{int64(int32(hashBytesExtended("tenant-1", 0))), -475081847},
	} {
		if c.got != c.want {
			t.Errorf("seeded or 32-bit hash = %d, PostgreSQL says %d", c.got, c.want)
		}
	}
}

func mustKey(t testing.TB, typ KeyType, s string) Key {
	t.Helper()
	k, err := ParseKey(typ, s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// refHashBytes is hash_bytes_extended written the slow, literal way: one byte at a time,
// each tail byte added at the position PostgreSQL's switch adds it. With seed 0 its low half
// is hash_bytes, PostgreSQL's unseeded 32-bit function (the same steps, returning c).
func refHashBytes(k []byte, seed uint64) uint64 {
	n := len(k)
	a := uint32(0x9e3779b9) + uint32(n) + 3923095
	b, c := a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	for ; len(k) >= 12; k = k[12:] {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = mix(a, b, c)
	}
	for i, x := range k {
		switch {
		case i < 4:
			a += uint32(x) << (8 * i)
		case i < 8:
			b += uint32(x) << (8 * (i - 4))
		default:
			c += uint32(x) << (8 * (i - 7))
		}
	}
	a, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// FuzzHashText checks what holds without a server: the hash is deterministic, the string and
// []byte forms agree, it equals the literal byte-at-a-time reference for any seed, the seed-0
// hash's low half is the unseeded 32-bit hash, and ParseKey takes exactly UTF-8 without NUL.
func FuzzHashText(f *testing.F) {
	for _, s := range []string{"", "a", "tenant-1", "abcdefghijk", "abcdefghijkl", "Straße", "👩‍👩‍👧‍👦", "\x00", "\xff", strings.Repeat("x", 1025)} {
		f.Add(s, uint64(0))
		f.Add(s, uint64(1)<<63|42)
	}
	f.Fuzz(func(t *testing.T, s string, seed uint64) {
		h := HashText(s)
		if h != HashText(s) || uint64(h) != hashBytesExtended([]byte(s), 0) {
			t.Fatalf("HashText(%q) is not stable or differs from the []byte form", s)
		}
		if got, ref := hashBytesExtended(s, seed), refHashBytes([]byte(s), seed); got != ref {
			t.Fatalf("hashBytesExtended(%q, %d) = %#x, reference %#x", s, seed, got, ref)
		}
		if c32 := uint32(refHashBytes([]byte(s), 0)); uint32(h) != c32 {
			t.Fatalf("low half of HashText(%q) = %#x, unseeded 32-bit hash %#x", s, uint32(h), c32)
		}
		k, err := ParseKey(KeyText, s)
		if valid := utf8.ValidString(s) && !strings.Contains(s, "\x00"); valid != (err == nil) {
			t.Fatalf("ParseKey(text, %q): %v", s, err)
		}
		if err == nil && (HashKey(k) != h || k.String() != s) {
			t.Fatalf("ParseKey(text, %q) changed the key", s)
		}
	})
}

// BenchmarkHashKey is the cost per key of the Go hash (ParseKey not included).
func BenchmarkHashKey(b *testing.B) {
	for _, c := range []struct {
		name string
		key  Key
	}{
		{"bigint", BigintKey(1234567890123)},
		{"integer", IntegerKey(123456)},
		{"uuid", mustKey(b, KeyUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
		{"text_8B", TextKey("tenant-1")},
		{"text_36B", TextKey("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
		{"text_1KiB", TextKey(strings.Repeat("x", 1024))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var sink int64
			for b.Loop() {
				sink += HashKey(c.key)
			}
			_ = sink
		})
	}
}
