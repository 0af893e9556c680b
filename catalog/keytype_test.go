package catalog

import (
	"errors"
	"strings"
	"testing"
)

func TestParseKeyTypeTakesPostgresNames(t *testing.T) {
	for in, want := range map[string]KeyType{
		"bigint": KeyBigint, "int8": KeyBigint, "integer": KeyInteger, "INT4": KeyInteger, "int": KeyInteger,
		"smallint": KeySmallint, "int2": KeySmallint, "uuid": KeyUUID, "text": KeyText,
		"varchar": KeyText, "character varying": KeyText,
	} {
		if got, err := ParseKeyType(in); err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"character", "bpchar", "numeric", "bytea", ""} {
		if _, err := ParseKeyType(in); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKeyType(%q): %v, want ErrBadKey", in, err)
		}
	}
}

func TestHashFunctionOfEveryKeyType(t *testing.T) {
	for typ, fn := range map[KeyType]string{KeyBigint: "hashint8extended", KeyInteger: "hashint4extended",
		KeySmallint: "hashint2extended", KeyUUID: "uuid_hash_extended", KeyText: "hashtextextended"} {
		if got := typ.HashFunction(); got != fn {
			t.Errorf("%s.HashFunction() = %q, want %q", typ, got, fn)
		}
	}
}

// TestParseKeyReadsWhatPostgresReads: the forms PostgreSQL's input functions accept give the
// same key (checked against a server in TestHashKeyMatchesPostgres); the rest is one clear
// error naming the key.
func TestParseKeyReadsWhatPostgresReads(t *testing.T) {
	const u = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
	for _, c := range []struct {
		typ  KeyType
		in   string
		want string // Key.String(), or the error's text
		ok   bool
	}{
		{KeyBigint, " -42 ", "-42", true},
		{KeyBigint, "+9223372036854775807", "9223372036854775807", true},
		{KeyBigint, "9223372036854775808", `"9223372036854775808" is out of range for type bigint`, false},
		{KeyInteger, "2147483648", "out of range for type integer", false},
		{KeySmallint, "-32768", "-32768", true},
		{KeySmallint, "1_000", `"1_000" is not a smallint`, false},
		{KeyUUID, strings.ToUpper(u), u, true},
		{KeyUUID, "{" + u + "}", u, true},
		{KeyUUID, strings.ReplaceAll(u, "-", ""), u, true},
		{KeyUUID, "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", u, true},
		{KeyUUID, "{" + u, "is not a uuid: give 32 hex digits", false},
		{KeyUUID, u + "-", "is not a uuid", false},
		{KeyUUID, "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11", "is not a uuid", false},
		{KeyText, "", "", true},
		{KeyText, " Straße ", " Straße ", true},
		{KeyText, "a\x00b", "holds a NUL byte", false},
		{KeyText, "\xff", "not valid UTF-8", false},
		{"numeric", "1", `key type "numeric" is not supported`, false},
	} {
		k, err := ParseKey(c.typ, c.in)
		switch {
		case c.ok && (err != nil || k.String() != c.want || k.Type() != c.typ):
			t.Errorf("ParseKey(%s, %q) = %q, %v; want %q", c.typ, c.in, k, err, c.want)
		case !c.ok && (!errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("ParseKey(%s, %q): %v; want an ErrBadKey saying %q", c.typ, c.in, err, c.want)
		}
	}
}

func TestHashKeyIsTheTypedHash(t *testing.T) {
	u := mustKey(t, KeyUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
	for _, c := range []struct {
		key  Key
		want int64
	}{
		{BigintKey(-5), HashBigint(-5)},
		{IntegerKey(-5), HashBigint(-5)}, // the integer hashes agree on common values
		{SmallintKey(-5), HashBigint(-5)},
		{u, HashUUID(u.u)},
		{TextKey("x"), HashText("x")},
	} {
		if got := HashKey(c.key); got != c.want {
			t.Errorf("HashKey(%s %s) = %d, want %d", c.key.Type(), c.key, got, c.want)
		}
	}
	if v, ok := IntegerKey(7).Int64(); !ok || v != 7 {
		t.Errorf("IntegerKey(7).Int64() = %d, %v", v, ok)
	}
	if _, ok := TextKey("7").Int64(); ok {
		t.Error("a text key has no Int64")
	}
}
