package catalog

import "math/bits"

// PostgreSQL's hash functions, written from the algorithm of its src/common/hashfn.c (Bob
// Jenkins' 2006 lookup3 as adapted there) and the type-specific wrappers, so that a key's
// hash computed in Go equals the one PostgreSQL computes for the same value. Each detail
// below changes the result; TestHashKeyMatchesPostgres compares with a real server.
//
// reshard assumes a little-endian server (x86_64, arm64): PostgreSQL reads the bytes of a
// uuid or a text four at a time in the machine's byte order, so on a big-endian server
// uuid_hash_extended and hashtextextended give other values. The integer hashes hash a
// number, not bytes, and are the same everywhere.

// hashInit is the starting value of the three state words: not lookup3's 0xdeadbeef.
const hashInit = 0x9e3779b9 + 3923095

// HashBigint is hashint8extended(v, 0).
func HashBigint(v int64) int64 {
	// The high half is folded into the low one (its complement for a negative v), so that a
	// value that fits in int32 hashes as hashint4 hashes it: 5::int8 and 5::int4 agree, and
	// so do 2^31 and -2^31 (a collision PostgreSQL accepts for cross-type hash joins).
	lo, hi := uint32(v), uint32(v>>32)
	if v < 0 {
		hi = ^hi
	}
	return int64(hashUint32Extended(lo^hi, 0))
}

// HashInteger is hashint4extended(v, 0), which equals HashBigint(int64(v)).
func HashInteger(v int32) int64 { return int64(hashUint32Extended(uint32(v), 0)) }

// HashSmallint is hashint2extended(v, 0): the value sign-extended to 32 bits first, so it
// equals HashInteger(int32(v)).
func HashSmallint(v int16) int64 { return HashInteger(int32(v)) }

// HashUUID is uuid_hash_extended(u, 0): the byte hash of the 16 bytes in the order they are
// written (u[0] is the first two hex digits).
func HashUUID(u [16]byte) int64 { return int64(hashBytesExtended(u[:], 0)) }

// HashText is hashtextextended(s, 0) for a column with a deterministic collation (the byte
// hash of s's bytes, no length header, no terminator): s must be the bytes the database
// stores, so its encoding must be UTF-8 and s is not normalised ("é" and "e\u0301" differ,
// as they do in PostgreSQL). A nondeterministic (ICU) collation hashes a sort key instead.
func HashText(s string) int64 { return int64(hashBytesExtended(s, 0)) }

// hashUint32Extended is hash_bytes_uint32_extended: the hash of one 32-bit word.
func hashUint32Extended(k uint32, seed uint64) uint64 {
	a, b, c := seeded(hashInit+4, seed)
	a += k
	a, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// hashBytesExtended is hash_bytes_extended: the 64-bit hash of k's bytes with a seed.
func hashBytesExtended[T ~string | ~[]byte](k T, seed uint64) uint64 {
	a, b, c := seeded(hashInit+uint32(len(k)), seed)
	for len(k) >= 12 {
		a += le32(k[0:4])
		b += le32(k[4:8])
		c += le32(k[8:12])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The last 0..11 bytes, zero-padded: bytes 0-7 go to a and b as little-endian words,
	// bytes 8-10 to c shifted up one byte (its low byte is "reserved for the length", which
	// PostgreSQL never adds: the length is only in the starting value). No early return on
	// an empty key: final runs whatever the length.
	var t [12]byte
	copy(t[:], k)
	a += le32(t[0:4])
	b += le32(t[4:8])
	c += le32(t[8:12]) << 8
	a, b, c = final(a, b, c)
	// b is the high half: the low half alone is PostgreSQL's 32-bit hash_bytes (hashtext).
	return uint64(b)<<32 | uint64(c)
}

// seeded sets up the state. Seed 0 leaves it alone, with no mix at all, which is what makes
// the low 32 bits of the seed-0 hash equal to the 32-bit hash; any other seed is added as
// a 12-byte block of its high word, its low word and zero, then mixed.
func seeded(init uint32, seed uint64) (a, b, c uint32) {
	a, b, c = init, init, init
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	return a, b, c
}

func le32[T ~string | ~[]byte](p T) uint32 {
	_ = p[3]
	return uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24
}

// mix is lookup3's mix: six rounds with a rotation each, the roles of a, b and c turning
// by one every round.
func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a, c = mixRound(a, c, b, 4)
	b, a = mixRound(b, a, c, 6)
	c, b = mixRound(c, b, a, 8)
	a, c = mixRound(a, c, b, 16)
	b, a = mixRound(b, a, c, 19)
	c, b = mixRound(c, b, a, 4)
	return a, b, c
}

// mixRound is one round of mix: x takes in z rotated by k, and z takes in y.
func mixRound(x, z, y uint32, k int) (uint32, uint32) {
	return (x - z) ^ bits.RotateLeft32(z, k), z + y
}

// final is lookup3's final: seven rounds, each word in turn (from c) taking in the one
// before it and its rotation.
func final(a, b, c uint32) (uint32, uint32, uint32) {
	c = finalRound(c, b, 14)
	a = finalRound(a, c, 11)
	b = finalRound(b, a, 25)
	c = finalRound(c, b, 16)
	a = finalRound(a, c, 4)
	b = finalRound(b, a, 14)
	c = finalRound(c, b, 24)
	return a, b, c
}

func finalRound(x, y uint32, k int) uint32 { return (x ^ y) - bits.RotateLeft32(y, k) }
