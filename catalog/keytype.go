package catalog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// KeyType is the PostgreSQL type of a cluster's tenant key column. Under hash distribution a
// range holds the keys whose HashKey is in it; HashFunction names the PostgreSQL function
// that computes the same value in SQL.
type KeyType string

// The key types reshard supports. varchar columns are KeyText: they use text's hash
// operator class.
const (
	KeyBigint   KeyType = "bigint"
	KeyInteger  KeyType = "integer"
	KeySmallint KeyType = "smallint"
	KeyUUID     KeyType = "uuid"
	KeyText     KeyType = "text"
)

// ErrBadKey is wrapped by every ParseKey and ParseKeyType error.
var ErrBadKey = errors.New("bad tenant key")

// ParseKeyType accepts the names PostgreSQL uses for the supported types
// (format_type's, the int8/int4/int2 aliases, varchar).
func ParseKeyType(s string) (KeyType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "bigint", "int8":
		return KeyBigint, nil
	case "integer", "int", "int4":
		return KeyInteger, nil
	case "smallint", "int2":
		return KeySmallint, nil
	case "uuid":
		return KeyUUID, nil
	case "text", "varchar", "character varying":
		return KeyText, nil
	case "character", "char", "bpchar":
		// bpchar hashes with trailing spaces stripped (hashbpcharextended): not supported.
		return "", fmt.Errorf("%w: key type %q (char(n)) is not supported: use text or varchar", ErrBadKey, s)
	}
	return "", fmt.Errorf("%w: key type %q is not supported: use bigint, integer, smallint, uuid or text", ErrBadKey, s)
}

// Integer reports whether t is an integer type (the only kind range distribution takes).
func (t KeyType) Integer() bool {
	return t == KeyBigint || t == KeyInteger || t == KeySmallint
}

// HashFunction is the extended support function of t's default hash operator class in
// PostgreSQL 15; `HashFunction(key, 0)` in SQL equals HashKey in Go.
func (t KeyType) HashFunction() string {
	switch t {
	case KeyBigint:
		return "hashint8extended"
	case KeyInteger:
		return "hashint4extended"
	case KeySmallint:
		return "hashint2extended"
	case KeyUUID:
		return "uuid_hash_extended"
	case KeyText:
		return "hashtextextended"
	}
	return ""
}

// Key is one tenant key value of a KeyType. The zero Key is invalid.
type Key struct {
	typ KeyType
	n   int64    // bigint, integer, smallint
	u   [16]byte // uuid, in PostgreSQL's byte order (as written)
	s   string   // text
}

// BigintKey, IntegerKey, SmallintKey, UUIDKey and TextKey make a Key from a Go value.
// TextKey takes s as the bytes stored in the database (UTF-8); ParseKey checks them.
func BigintKey(v int64) Key   { return Key{typ: KeyBigint, n: v} }
func IntegerKey(v int32) Key  { return Key{typ: KeyInteger, n: int64(v)} }
func SmallintKey(v int16) Key { return Key{typ: KeySmallint, n: int64(v)} }
func UUIDKey(u [16]byte) Key  { return Key{typ: KeyUUID, u: u} }
func TextKey(s string) Key    { return Key{typ: KeyText, s: s} }

// Type is the key's type.
func (k Key) Type() KeyType { return k.typ }

// Int64 is the value of an integer key; ok is false for uuid and text keys.
func (k Key) Int64() (v int64, ok bool) { return k.n, k.typ.Integer() }

// String is PostgreSQL's output form of the key (decimal, lower-case dashed uuid, the text).
func (k Key) String() string {
	switch k.typ {
	case KeyUUID:
		return formatUUID(k.u)
	case KeyText:
		return k.s
	}
	return strconv.FormatInt(k.n, 10)
}

// HashKey is PostgreSQL's `HashFunction(key, 0)` for the key's type, as the signed bigint
// PostgreSQL returns.
func HashKey(k Key) int64 {
	switch k.typ {
	case KeyBigint:
		return HashBigint(k.n)
	case KeyInteger:
		return HashInteger(int32(k.n))
	case KeySmallint:
		return HashSmallint(int16(k.n))
	case KeyUUID:
		return HashUUID(k.u)
	case KeyText:
		return HashText(k.s)
	}
	panic("catalog: HashKey of a zero Key")
}

// ParseKey reads a key of type t from the command line, accepting what PostgreSQL 15's
// input function for t accepts: integers with optional sign and surrounding white space;
// uuids as 32 hex digits in either case, optionally with a dash after any group of four
// and in braces; text exactly as given, which must be UTF-8 without NUL bytes.
func ParseKey(t KeyType, s string) (Key, error) {
	switch t {
	case KeyBigint, KeyInteger, KeySmallint:
		return parseIntKey(t, s)
	case KeyUUID:
		u, err := parseUUID(s)
		if err != nil {
			return Key{}, err
		}
		return UUIDKey(u), nil
	case KeyText:
		if !utf8.ValidString(s) {
			return Key{}, fmt.Errorf("%w: text key %q is not valid UTF-8: reshard assumes a UTF-8 database", ErrBadKey, s)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return Key{}, fmt.Errorf("%w: text key %q holds a NUL byte, which PostgreSQL text cannot store", ErrBadKey, s)
		}
		return TextKey(s), nil
	}
	return Key{}, fmt.Errorf("%w: key type %q is not supported: use bigint, integer, smallint, uuid or text", ErrBadKey, t)
}

func parseIntKey(t KeyType, s string) (Key, error) {
	bits := map[KeyType]int{KeyBigint: 64, KeyInteger: 32, KeySmallint: 16}[t]
	// C isspace in PostgreSQL's int input: space, \t, \n, \v, \f, \r.
	v, err := strconv.ParseInt(strings.Trim(s, " \t\n\v\f\r"), 10, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return Key{}, fmt.Errorf("%w: %q is out of range for type %s", ErrBadKey, s, t)
		}
		return Key{}, fmt.Errorf("%w: %q is not a %s: give a decimal number like 42 or -7", ErrBadKey, s, t)
	}
	return Key{typ: t, n: v}, nil
}

func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	bad := fmt.Errorf("%w: %q is not a uuid: give 32 hex digits, like 0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d", ErrBadKey, s)
	src := s
	braces := strings.HasPrefix(src, "{")
	if braces {
		if !strings.HasSuffix(src, "}") {
			return u, bad
		}
		src = src[1 : len(src)-1]
	}
	for i := range u {
		if len(src) < 2 {
			return u, bad
		}
		hi, ok1 := unhex(src[0])
		lo, ok2 := unhex(src[1])
		if !ok1 || !ok2 {
			return u, bad
		}
		u[i] = hi<<4 | lo
		src = src[2:]
		// PostgreSQL allows one dash after each group of four digits, never at the end.
		if i%2 == 1 && i < len(u)-1 && strings.HasPrefix(src, "-") {
			src = src[1:]
		}
	}
	if src != "" {
		return u, bad
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func formatUUID(u [16]byte) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, 0, 36)
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexd[c>>4], hexd[c&15])
	}
	return string(b)
}
