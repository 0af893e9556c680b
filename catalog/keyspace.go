package catalog

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Distribution says what a range's bounds are compared with.
type Distribution string

const (
	// DistRange: ranges are over the key itself (integer keys only). The default.
	DistRange Distribution = "range"
	// DistHash: ranges are over PostgreSQL's 64-bit extended hash of the key, seed 0.
	DistHash Distribution = "hash"
)

// Keyspace is how the rows of each sharded table fall on the key line: the column that
// holds the tenant key (one per table), the key's type and the distribution. Every SQL
// statement that selects a range (publication row filter, fence trigger, copy, apply,
// verify, delete, stats) builds its expression here, so that they all agree.
//
// The zero value with Key set is what reshard did before keyspaces had more to them:
// bigint keys, by range, the same column in every table.
type Keyspace struct {
	Key          string            // the default key column
	Type         KeyType           // "": bigint
	Distribution Distribution      // "": range
	Columns      map[string]string // table (as configured) -> its key column, where not Key
}

// OrKey is k, with key as its key column when k names none: the keyspace of a caller
// configured with both a Keyspace and a bare key column (the mover's and the cutover's).
func (k Keyspace) OrKey(key string) Keyspace {
	if k.Key == "" {
		k.Key = key
	}
	return k
}

// RangeOn is the keyspace of bigint keys by range in column col of every table.
func RangeOn(col string) Keyspace { return Keyspace{Key: col} }

// Keyspace is the configuration's keyspace.
func (c Config) Keyspace() Keyspace {
	return Keyspace{Key: c.Key, Type: c.KeyType, Distribution: c.Distribution, Columns: c.TableKeys}
}

// Column is the key column of table (as configured).
func (k Keyspace) Column(table string) string {
	if c, ok := k.Columns[table]; ok && c != "" {
		return c
	}
	return k.Key
}

// Hashed reports whether ranges are over the key's hash.
func (k Keyspace) Hashed() bool { return k.Distribution == DistHash }

// KeyType is the key's type (bigint when not set).
func (k Keyspace) KeyType() KeyType {
	if k.Type == "" {
		return KeyBigint
	}
	return k.Type
}

// Dist is the distribution (range when not set).
func (k Keyspace) Dist() Distribution {
	if k.Distribution == "" {
		return DistRange
	}
	return k.Distribution
}

// PositionOf is the SQL expression of the key line position of v, an SQL expression of
// the key's type: v itself under range, `hashfn(v, 0)` under hash.
func (k Keyspace) PositionOf(v string) string {
	if !k.Hashed() {
		return v
	}
	return k.KeyType().HashFunction() + "(" + v + ", 0)"
}

// Expr is the SQL expression of the position of a row of table: its key column
// (qualified with alias unless alias is empty), hashed under hash distribution.
func (k Keyspace) Expr(table, alias string) string {
	col := pgx.Identifier{k.Column(table)}.Sanitize()
	if alias != "" {
		col = alias + "." + col
	}
	return k.PositionOf(col)
}

// Pred is the predicate selecting table's rows in r, e.g. `("tenant_id" >= 10 AND
// "tenant_id" < 20)` or `(hashtextextended(x."slug", 0) >= 10 AND ...)`.
func (k Keyspace) Pred(table, alias string, r KeyRange) string {
	return r.SQL(k.Expr(table, alias))
}

// Position is where key falls on the key line: its value under range, HashKey under hash.
func (k Keyspace) Position(key Key) (int64, error) {
	if key.Type() != k.KeyType() && !(key.Type().Integer() && k.KeyType().Integer()) {
		return 0, fmt.Errorf("%w: %s key %s for a keyspace of %s keys", ErrBadKey, key.Type(), key, k.KeyType())
	}
	if k.Hashed() {
		return HashKey(key), nil
	}
	v, ok := key.Int64()
	if !ok {
		return 0, fmt.Errorf("%w: %s key %s under range distribution: use distribution: hash", ErrBadKey, key.Type(), key)
	}
	return v, nil
}

// SplitTableName reads a configured table name: "table" or "schema.table". Names are taken
// exactly as PostgreSQL stores them (no case folding); a part in double quotes may hold
// dots ("" is a quote inside it).
func SplitTableName(s string) ([]string, error) {
	var parts []string
	for rest := s; ; {
		var part string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				if rest[i] == '"' {
					if i+1 < len(rest) && rest[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					break
				}
				b.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return nil, fmt.Errorf("table name %q: a quote is not closed", s)
			}
			part, rest = b.String(), rest[i+1:]
			if rest != "" && rest[0] != '.' {
				return nil, fmt.Errorf("table name %q: want table or schema.table", s)
			}
		} else if i := strings.IndexByte(rest, '.'); i >= 0 {
			part, rest = rest[:i], rest[i:]
		} else {
			part, rest = rest, ""
		}
		if part == "" || strings.ContainsRune(part, 0) {
			return nil, fmt.Errorf("table name %q: empty part", s)
		}
		parts = append(parts, part)
		if rest == "" {
			break
		}
		rest = rest[1:]
		if rest == "" {
			return nil, fmt.Errorf("table name %q: empty part", s)
		}
	}
	if len(parts) > 2 {
		return nil, fmt.Errorf("table name %q: want table or schema.table", s)
	}
	return parts, nil
}

// QuoteTable is the quoted SQL name of a configured table name (`"billing"."Invoices"`).
// A name SplitTableName refuses is quoted whole, so that PostgreSQL reports it missing.
func QuoteTable(s string) string {
	parts, err := SplitTableName(s)
	if err != nil {
		return pgx.Identifier{s}.Sanitize()
	}
	return pgx.Identifier(parts).Sanitize()
}

// QuoteTables is QuoteTable of each name.
func QuoteTables(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = QuoteTable(n)
	}
	return out
}

// ColumnKeyType is the key type of a column of PostgreSQL type formatType (format_type's
// output, e.g. "character varying(20)"), or an error saying why it cannot be a key.
func ColumnKeyType(formatType string) (KeyType, error) {
	base, _, _ := strings.Cut(formatType, "(")
	return ParseKeyType(base)
}

// Holds reports whether a column of PostgreSQL type formatType can hold keys of t: any
// integer type for an integer key (they hash and compare alike), else the same type.
func (t KeyType) Holds(formatType string) bool {
	ct, err := ColumnKeyType(formatType)
	if err != nil {
		return false
	}
	return ct == t || (ct.Integer() && t.Integer())
}

// Describe names the columns that hold keys of t, for messages.
func (t KeyType) Describe() string {
	switch {
	case t.Integer():
		return "an integer column (bigint)"
	case t == KeyText:
		return "a text or varchar column"
	}
	return "a " + string(t) + " column"
}

// PositionOfText is Position of a key written as text (ParseKey of the keyspace's type).
func (k Keyspace) PositionOfText(s string) (int64, error) {
	key, err := ParseKey(k.KeyType(), s)
	if err != nil {
		return 0, err
	}
	return k.Position(key)
}
