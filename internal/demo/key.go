package demo

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/reshard/reshard/catalog"
)

// TenantID is the Go type of a demo tenant's key, which decides the whole keyspace of the
// demo: int64 is a bigint tenant_id placed on the key line by range (the shape `make demo`
// runs), UUID a uuid tenant_id placed by its hash (`reshard dev up --distribution hash`).
// Everything keyed by tenant (tenants, fingerprints, a load's changes and ledger rows, the
// routers) takes it as a type parameter; the plain names (Tenant, Fingerprints, Changes,
// ...) are the int64 ones.
type TenantID interface{ int64 | UUID }

// UUID is a uuid tenant key, its 16 bytes in written order (PostgreSQL's). It reads and
// writes itself as a uuid for pgx and as its text form for JSON (a map key too).
type UUID [16]byte

// String is PostgreSQL's output form.
func (u UUID) String() string { return catalog.UUIDKey(u).String() }

// MarshalText writes the output form.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText reads any input form PostgreSQL accepts.
func (u *UUID) UnmarshalText(b []byte) error {
	k, err := catalog.ParseKey(catalog.KeyUUID, string(b))
	if err != nil {
		return err
	}
	*u = UUID(uuidBytes(k))
	return nil
}

// ScanUUID lets pgx scan a uuid column into u.
func (u *UUID) ScanUUID(v pgtype.UUID) error {
	if !v.Valid {
		return fmt.Errorf("demo: NULL tenant key")
	}
	*u = v.Bytes
	return nil
}

// UUIDValue lets pgx send u as a uuid.
func (u UUID) UUIDValue() (pgtype.UUID, error) { return pgtype.UUID{Bytes: u, Valid: true}, nil }

func uuidBytes(k catalog.Key) [16]byte {
	// catalog.Key keeps its bytes to itself; its output form is exact: 32 hex digits.
	var u [16]byte
	_, _ = hex.Decode(u[:], []byte(strings.ReplaceAll(k.String(), "-", "")))
	return u
}

// KeyOf is a tenant key as a catalog key (for the resolver).
func KeyOf[K TenantID](k K) catalog.Key {
	switch v := any(k).(type) {
	case UUID:
		return catalog.UUIDKey(v)
	case int64:
		return catalog.BigintKey(v)
	}
	panic("demo: unknown tenant key type")
}

// KeyspaceOf is the keyspace of the demo with tenant keys of type K: bigint by range, or
// uuid by hash.
func KeyspaceOf[K TenantID]() catalog.Keyspace {
	var k K
	if _, ok := any(k).(UUID); ok {
		return catalog.Keyspace{Key: Key, Type: catalog.KeyUUID, Distribution: catalog.DistHash}
	}
	return catalog.RangeOn(Key)
}

// Hashed reports whether K's keyspace is by hash.
func Hashed[K TenantID]() bool { return KeyspaceOf[K]().Hashed() }

// Position is where tenant k falls on the key line, as KeyspaceOf[K]().Position puts it
// (the key itself, or PostgreSQL's uuid_hash_extended of it): what ranges hold.
func Position[K TenantID](k K) int64 {
	switch v := any(k).(type) {
	case UUID:
		return catalog.HashUUID(v)
	case int64:
		return v
	}
	panic("demo: unknown tenant key type")
}

// sqlType is the PostgreSQL type of the tenant_id columns.
func sqlType[K TenantID]() string { return string(KeyspaceOf[K]().KeyType()) }

// seedOf is 64 bits of k to seed a tenant's random rows with (the id itself for int64,
// so the int64 demo's data is what it always was).
func seedOf[K TenantID](k K) uint64 {
	switch v := any(k).(type) {
	case UUID:
		return binary.LittleEndian.Uint64(v[:8]) ^ binary.LittleEndian.Uint64(v[8:])
	case int64:
		return uint64(v)
	}
	panic("demo: unknown tenant key type")
}

// keyLess orders tenant keys along the key line (ties, which only hashes have, by bytes).
func keyLess[K TenantID](a, b K) bool {
	pa, pb := Position(a), Position(b)
	if pa != pb {
		return pa < pb
	}
	ua, okA := any(a).(UUID)
	ub, okB := any(b).(UUID)
	return okA && okB && bytes.Compare(ua[:], ub[:]) < 0
}

// newTenantID makes the key of the tenant whose random bits are h: for int64 h itself, or
// inside hot when hot is set (never fails); for UUID a version-4 uuid from h, which fails
// (ok false) when hot is set and its hash is not in it, so the caller draws again.
func newTenantID[K TenantID](h uint64, hot bool, r catalog.KeyRange) (K, bool) {
	var k K
	switch p := any(&k).(type) {
	case *int64:
		*p = int64(h)
		if hot {
			*p = inRange(h, r)
		}
	case *UUID:
		binary.BigEndian.PutUint64(p[:8], h)
		binary.BigEndian.PutUint64(p[8:], splitmix64(h))
		p[6] = p[6]&0x0f | 0x40 // version 4
		p[8] = p[8]&0x3f | 0x80 // RFC 4122 variant
		if hot && !r.Empty() && !r.Contains(catalog.HashUUID(*p)) {
			return k, false
		}
	}
	return k, true
}
