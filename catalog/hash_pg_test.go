package catalog

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/testenv"
)

// The seeds the text case also checks hashtextextended(k, seed) with: the seed's two halves
// go to different state words, so each half and the sign bit get their own.
var pgSeeds = []int64{1, -1, 0x0123456789abcdef, math.MinInt64}

// TestHashKeyMatchesPostgres compares HashKey with PostgreSQL 15's own extended hash
// functions (seed 0) on every key type, at least 10,000 keys each with the edge values, and
// ParseKey with PostgreSQL's input functions. Text and uuid are hashed both straight from
// an array (aligned datums) and from a table row (short-header or unaligned datums), the
// two code paths of PostgreSQL's byte hash.
func TestHashKeyMatchesPostgres(t *testing.T) {
	pg := testenv.Postgres(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSNApp())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var enc string
	if err := conn.QueryRow(ctx, "SHOW server_encoding").Scan(&enc); err != nil || enc != "UTF8" {
		t.Fatalf("server_encoding = %q (%v): the text hash is over UTF-8 bytes", enc, err)
	}
	rng := testRand(t)

	t.Run("bigint", func(t *testing.T) {
		keys := bigintKeys(rng)
		got := pgHashes(ctx, t, conn, "int8", keyStrings(keys), "hashint8extended(k, 0)", "coalesce(CASE WHEN k BETWEEN -2147483648 AND 2147483647 THEN hashint4extended(k::int4, 0) END, 0)")
		checkHashes(t, keys, got[0], HashKey, "hashint8extended")
		// hashint8 folds its high half into the low one so that it agrees with hashint4 on
		// every value both types hold.
		var small []Key
		var small4 []int64
		for i, k := range keys {
			if v, _ := k.Int64(); v == int64(int32(v)) {
				small, small4 = append(small, k), append(small4, got[1][i])
			}
		}
		checkHashes(t, small, small4, HashKey, "hashint4extended of the same value")
	})
	t.Run("integer", func(t *testing.T) {
		keys := integerKeys(rng)
		got := pgHashes(ctx, t, conn, "int4", keyStrings(keys), "hashint4extended(k, 0)", "hashint8extended(k::int8, 0)")
		checkHashes(t, keys, got[0], HashKey, "hashint4extended")
		checkHashes(t, keys, got[1], HashKey, "hashint8extended of the same value")
	})
	t.Run("smallint", func(t *testing.T) {
		var keys []Key // every smallint
		for v := math.MinInt16; v <= math.MaxInt16; v++ {
			keys = append(keys, SmallintKey(int16(v)))
		}
		got := pgHashes(ctx, t, conn, "int2", keyStrings(keys), "hashint2extended(k, 0)")
		checkHashes(t, keys, got[0], HashKey, "hashint2extended")
	})
	t.Run("uuid", func(t *testing.T) {
		keys := uuidKeys(rng)
		got := pgHashes(ctx, t, conn, "uuid", keyStrings(keys), "uuid_hash_extended(k, 0)")
		checkHashes(t, keys, got[0], HashKey, "uuid_hash_extended")
		row := pgRowHashes(ctx, t, conn, "uuid", keyStrings(keys), "uuid_hash_extended(k, 0)")
		checkHashes(t, keys, row, HashKey, "uuid_hash_extended from an unaligned table column")
	})
	t.Run("text", func(t *testing.T) {
		keys := textKeys(rng)
		exprs := []string{"hashtextextended(k, 0)", "hashtext(k)"}
		for i := range pgSeeds {
			exprs = append(exprs, fmt.Sprintf("hashtextextended(k, $%d)", i+2))
		}
		got := pgHashes(ctx, t, conn, "text", keyStrings(keys), exprs...)
		checkHashes(t, keys, got[0], HashKey, "hashtextextended")
		checkHashes(t, keys, got[1], func(k Key) int64 {
			return int64(int32(hashBytesExtended(k.String(), 0))) // low half = 32-bit hash_bytes
		}, "hashtext (32 bits)")
		for i, seed := range pgSeeds {
			checkHashes(t, keys, got[i+2], func(k Key) int64 {
				return int64(hashBytesExtended(k.String(), uint64(seed)))
			}, fmt.Sprintf("hashtextextended(k, %d)", seed))
		}
		row := pgRowHashes(ctx, t, conn, "text", keyStrings(keys), "hashtextextended(k, 0)")
		checkHashes(t, keys, row, HashKey, "hashtextextended from a table row (short header, TOAST)")
	})
	t.Run("input forms", func(t *testing.T) { checkInputForms(ctx, t, conn) })
}

// testRand is seeded from RESHARD_HASH_SEED when set (to replay a failure), else the clock.
func testRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RESHARD_HASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("RESHARD_HASH_SEED: %v", err)
		}
	}
	t.Logf("random keys from RESHARD_HASH_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// pgHashes evaluates exprs over k for the keys, sent as one text[] cast to typ[] (so
// PostgreSQL's own input function reads them), in one round trip. Extra $2.. are pgSeeds.
func pgHashes(ctx context.Context, t *testing.T, conn *pgx.Conn, typ string, keys []string, exprs ...string) [][]int64 {
	t.Helper()
	q := fmt.Sprintf("SELECT %s FROM unnest($1::text[]::%s[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
		strings.Join(exprs, ", "), typ)
	args := []any{keys}
	if strings.Contains(q, "$2") {
		for _, s := range pgSeeds {
			args = append(args, s)
		}
	}
	return collect(t, conn, ctx, q, len(exprs), len(keys), args...)
}

// pgRowHashes stores the keys in a temp table first (after a bool, so a uuid sits at an odd
// offset; short text gets a 1-byte header, long text is TOASTed) and hashes the stored
// values: the byte hash's unaligned path.
func pgRowHashes(ctx context.Context, t *testing.T, conn *pgx.Conn, typ string, keys []string, expr string) []int64 {
	t.Helper()
	// The table must exist before the batch: pgx prepares every statement of a batch first.
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS pg_temp.hk; CREATE TEMP TABLE hk (i bigint, pad bool, k %s)", typ)); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue(fmt.Sprintf("INSERT INTO hk SELECT i, true, k FROM unnest($1::text[]::%s[]) WITH ORDINALITY AS u(k, i)", typ), keys)
	b.Queue(fmt.Sprintf("SELECT %s FROM hk ORDER BY i", expr))
	res := conn.SendBatch(ctx, b)
	defer res.Close()
	if _, err := res.Exec(); err != nil {
		t.Fatalf("stage keys: %v", err)
	}
	rows, err := res.Query()
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(out) != len(keys) {
		t.Fatalf("row hashes: %d of %d (%v)", len(out), len(keys), err)
	}
	return out
}

func collect(t *testing.T, conn *pgx.Conn, ctx context.Context, q string, cols, n int, args ...any) [][]int64 {
	t.Helper()
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out := make([][]int64, cols)
	dst := make([]any, cols)
	vals := make([]int64, cols)
	for i := range dst {
		dst[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(dst...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			out[i] = append(out[i], v)
		}
	}
	if err := rows.Err(); err != nil || len(out[0]) != n {
		t.Fatalf("%s: %d of %d rows (%v)", q, len(out[0]), n, err)
	}
	return out
}

func checkHashes(t *testing.T, keys []Key, want []int64, hash func(Key) int64, what string) {
	t.Helper()
	bad := 0
	for i, k := range keys {
		if got := hash(k); got != want[i] {
			if bad++; bad <= 5 {
				t.Errorf("%s(%s) = %d in PostgreSQL, %d in Go", what, quoteKey(k), want[i], got)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d keys differ", what, bad, len(keys))
	} else {
		t.Logf("%s: %d keys agree", what, len(keys))
	}
}

func quoteKey(k Key) string {
	s := strconv.Quote(k.String())
	if len(s) > 60 {
		s = fmt.Sprintf("%s... (%d bytes)", s[:50], len(k.String()))
	}
	return s
}

func keyStrings(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.String()
	}
	return out
}

// around returns c-d .. c+d without overflowing int64.
func around(c int64, d int64) []int64 {
	var out []int64
	for x := -d; x <= d; x++ {
		if (x > 0 && c > math.MaxInt64-x) || (x < 0 && c < math.MinInt64-x) {
			continue
		}
		out = append(out, c+x)
	}
	return out
}

func bigintKeys(rng *rand.Rand) []Key {
	var vs []int64
	for _, c := range []int64{0, math.MaxInt16, math.MinInt16, math.MaxInt32, math.MinInt32,
		1 << 31, -1 << 31, 1 << 32, -1 << 32, 1<<32 + 1<<31, 1 << 62, -1 << 62, math.MaxInt64, math.MinInt64} {
		vs = append(vs, around(c, 40)...)
	}
	for range 4000 {
		vs = append(vs, int64(rng.Uint64())) // the whole line
	}
	for range 3000 {
		vs = append(vs, int64(int32(rng.Uint32()))) // int32's range, both signs
	}
	for range 3000 {
		vs = append(vs, rng.Int64N(1e9)) // sequential ids
	}
	keys := make([]Key, len(vs))
	for i, v := range vs {
		keys[i] = BigintKey(v)
	}
	return keys
}

func integerKeys(rng *rand.Rand) []Key {
	var vs []int64
	for _, c := range []int64{0, math.MaxInt16, math.MinInt16, 1 << 24} {
		vs = append(vs, around(c, 200)...)
	}
	vs = append(vs, around(math.MaxInt32-100, 100)...)
	vs = append(vs, around(math.MinInt32+100, 100)...)
	for range 10000 {
		vs = append(vs, int64(int32(rng.Uint32())))
	}
	keys := make([]Key, len(vs))
	for i, v := range vs {
		keys[i] = IntegerKey(int32(v))
	}
	return keys
}

func uuidKeys(rng *rand.Rand) []Key {
	var us [][16]byte
	var nilU, maxU [16]byte
	for i := range maxU {
		maxU[i] = 0xff
	}
	us = append(us, nilU, maxU)
	for bit := range 128 { // each single bit
		var u [16]byte
		u[bit/8] = 1 << (bit % 8)
		us = append(us, u)
	}
	for i := range 256 { // a counter in the last byte, then the first
		var a, b [16]byte
		a[15], b[0] = byte(i), byte(i)
		us = append(us, a, b)
	}
	for range 10000 { // random version-4 uuids
		var u [16]byte
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		us = append(us, u)
	}
	keys := make([]Key, len(us))
	for i, u := range us {
		keys[i] = UUIDKey(u)
	}
	return keys
}

// runeClasses are the UTF-8 lengths 1 to 4, combining marks and emoji pieces.
var runeClasses = [][2]rune{{0x20, 0x7e}, {0x01, 0x7f}, {0x80, 0x7ff}, {0x300, 0x36f}, {0x800, 0xd7ff},
	{0xe000, 0xfffd}, {0x10000, 0x10ffff}, {0x1f300, 0x1faff}}

func randText(rng *rand.Rand, nbytes int) string {
	var b strings.Builder
	for b.Len() < nbytes {
		cl := runeClasses[rng.IntN(len(runeClasses))]
		r := cl[0] + rng.Int32N(cl[1]-cl[0]+1)
		if utf8.RuneLen(r) > nbytes-b.Len() {
			r = rune(0x21 + rng.IntN(0x5e)) // fill the last bytes with ASCII
		}
		b.WriteRune(r)
	}
	return b.String()
}

func textKeys(rng *rand.Rand) []Key {
	ss := []string{"", " ", "a", "A", "tenant-1", "é", "e\u0301", "ß", "Straße", "İstanbul", "日本語",
		"עברית", "مرحبا", "😀", "👩‍👩‍👧‍👦", "🇫🇷", "a\u0301\u0302\u0303\u0304", "\t\n", "'\"\\", "\u00a0", "\uffef", "\U0010fffd",
		strings.Repeat("x", 1025), strings.Repeat("é", 700), strings.Repeat("😀", 3000), randText(rng, 100000)}
	for n := 0; n <= 100; n++ { // every tail length, in ASCII and in multi-byte text
		ss = append(ss, strings.Repeat("abcdefghijk"[n%11:n%11+1], n), randText(rng, n), randText(rng, n))
	}
	for range 10000 {
		n := rng.IntN(64)
		if rng.IntN(10) == 0 {
			n = rng.IntN(4000)
		}
		ss = append(ss, randText(rng, n))
	}
	keys := make([]Key, len(ss))
	for i, s := range ss {
		keys[i] = TextKey(s)
	}
	return keys
}

// checkInputForms holds ParseKey to what PostgreSQL's input functions accept, and Key.String
// to what they print.
func checkInputForms(ctx context.Context, t *testing.T, conn *pgx.Conn) {
	if _, err := conn.Exec(ctx, `CREATE FUNCTION pg_temp.try_in(s text, typ regtype) RETURNS text
		LANGUAGE plpgsql AS $$
		DECLARE r text;
		BEGIN
			EXECUTE format('SELECT $1::%s::text', typ) INTO r USING s;
			RETURN r;
		EXCEPTION WHEN others THEN RETURN NULL;
		END $$`); err != nil {
		t.Fatal(err)
	}
	for typ, inputs := range inputForms {
		rows, err := conn.Query(ctx, "SELECT pg_temp.try_in(s, $2::regtype) FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i) ORDER BY i", inputs, string(typ))
		if err != nil {
			t.Fatal(err)
		}
		want, err := pgx.CollectRows(rows, pgx.RowTo[*string])
		if err != nil || len(want) != len(inputs) {
			t.Fatalf("%s inputs: %d of %d (%v)", typ, len(want), len(inputs), err)
		}
		for i, in := range inputs {
			k, err := ParseKey(typ, in)
			switch {
			case want[i] == nil && err == nil:
				t.Errorf("ParseKey(%s, %q) = %s, PostgreSQL refuses it", typ, in, k)
			case want[i] != nil && err != nil:
				t.Errorf("ParseKey(%s, %q): %v; PostgreSQL reads %s", typ, in, err, *want[i])
			case want[i] != nil && k.String() != *want[i]:
				t.Errorf("ParseKey(%s, %q) = %s, PostgreSQL reads %s", typ, in, k, *want[i])
			}
		}
	}
}

var inputForms = map[KeyType][]string{
	KeyBigint: {"0", "-0", "+7", "-7", " 42", "42 ", "\t42\n", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "-9223372036854775809", "", " ", "-", "+", "1e3", "0x10", "1_000", "1.0", "12a", "- 1", "００"},
	KeyInteger:  {"0", "2147483647", "-2147483648", "2147483648", "-2147483649", " -5 ", "abc", ""},
	KeySmallint: {"32767", "-32768", "32768", "-32769", "+0", "007"},
	KeyUUID: {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11",
		"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
		"00000000-0000-0000-0000-000000000000", "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
		"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
		"a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
		" a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
		"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "", "{}", "{", "}"},
}
