package mover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

// relation maps a source relation, as described by a pgoutput Relation message, onto its
// target table. A new Relation message for the same id makes a new *relation, so an
// applier may key its statement cache on the pointer.
type relation struct {
	id   uint32
	name string // schema.table, for messages
	dst  *table
	cols []relColumn // in message order
	// where are the indexes (into cols) of the columns that identify a row in UPDATE and
	// DELETE: the replica identity, or the target's primary key under REPLICA IDENTITY FULL.
	where []int
	full  bool
	// key is the index of the sharding key column.
	key int
	// isWhere marks the columns in where.
	isWhere []bool
	// overriding: the target has a GENERATED ALWAYS identity column among cols, so an
	// INSERT must say OVERRIDING SYSTEM VALUE to write the source's values.
	overriding bool
}

type relColumn struct {
	name string
	typ  string // the target column's type, for casts
	pk   bool   // part of the target's primary key
	// identityAlways: GENERATED ALWAYS AS IDENTITY on the target; an UPDATE cannot set it.
	identityAlways bool
}

// newRelation resolves a Relation message against the target tables (keyed schema.table).
func newRelation(msg *pglogrepl.RelationMessage, tables map[string]*table, keys catalog.Keyspace) (*relation, error) {
	name := msg.Namespace + "." + msg.RelationName
	dst, ok := tables[name]
	if !ok {
		// With publish_via_partition_root, PostgreSQL 15 also describes the leaf partition
		// a change came from, although the change itself names the root. Only a change
		// that names an unknown relation is an error (see decodeChange).
		return &relation{id: msg.RelationID, name: name}, nil
	}
	r := &relation{id: msg.RelationID, name: name, dst: dst, full: msg.ReplicaIdentity == 'f', key: -1}
	key := keys.Column(dst.Name)
	pk := map[string]bool{}
	for _, c := range dst.PK {
		pk[c] = true
	}
	for i, c := range msg.Columns {
		dc := dst.column(c.Name)
		if dc == nil {
			return nil, &missingColumnError{table: dst, column: c.Name}
		}
		if dc.Generated {
			return nil, fatalf("column %q of %s is generated on the target but not on the source: make it a plain column on the target, then restart the mover", c.Name, name)
		}
		r.cols = append(r.cols, relColumn{name: c.Name, typ: dc.Type, pk: pk[c.Name], identityAlways: dc.IdentityAlways})
		r.overriding = r.overriding || dc.IdentityAlways
		if c.Name == key {
			r.key = i
		}
		if (r.full && pk[c.Name]) || (!r.full && c.Flags&1 != 0) {
			r.where = append(r.where, i)
		}
	}
	if len(r.where) == 0 {
		return nil, fatalf("%s has no replica identity columns in the replication stream: give it a primary key that includes the sharding key", name)
	}
	r.isWhere = make([]bool, len(r.cols))
	for _, w := range r.where {
		r.isWhere[w] = true
	}
	return r, nil
}

// col is one column value of a row in the stream.
type col struct {
	kind byte // 'n' NULL, 'u' unchanged TOASTed value (not sent), 't' text, 'b' binary
	data []byte
}

// tuple is a row as pgoutput sends it, one col per column of the Relation message.
type tuple []col

// change is one decoded row change.
type change struct {
	rel    *relation
	op     byte  // 'I', 'U', 'D'
	newTup tuple // nil for a delete
	oldTup tuple // the key ('K') or full old row ('O'), if sent
	size   int
}

// segment is a piece of the stream handed from the receiver to the applier: changes of one
// source transaction (a large transaction comes as several segments, the first with begin,
// the last with commit), or a keepalive position when no transaction is open.
type segment struct {
	begin      bool
	finalLSN   pglogrepl.LSN // commit LSN announced by Begin
	changes    []change
	size       int // bytes of the changes
	commit     bool
	endLSN     pglogrepl.LSN // Commit.TransactionEndLSN: what is acknowledged once applied
	commitTime time.Time
	// keepalive: nothing is pending before walEnd other than what came earlier.
	keepalive  bool
	walEnd     pglogrepl.LSN
	serverTime time.Time
}

var errShort = errors.New("message too short")

// decodeTuple reads a TupleData: Int16 column count, then per column a kind byte and, for
// text and binary values, an Int32 length and the bytes. Values alias buf.
func decodeTuple(buf []byte) (tuple, int, error) {
	if len(buf) < 2 {
		return nil, 0, errShort
	}
	n := int(binary.BigEndian.Uint16(buf))
	off := 2
	t := make(tuple, n)
	for i := range t {
		if off >= len(buf) {
			return nil, 0, errShort
		}
		t[i].kind = buf[off]
		off++
		switch t[i].kind {
		case 'n', 'u':
		case 't', 'b':
			if off+4 > len(buf) {
				return nil, 0, errShort
			}
			l := int(binary.BigEndian.Uint32(buf[off:]))
			off += 4
			if off+l > len(buf) {
				return nil, 0, errShort
			}
			t[i].data = buf[off : off+l : off+l]
			off += l
		default:
			return nil, 0, fmt.Errorf("unknown column kind %q", t[i].kind)
		}
	}
	return t, off, nil
}

// decodeChange decodes an Insert ('I'), Update ('U') or Delete ('D') message of protocol
// 1. It copies data once: the receive buffer is reused by the next message.
func decodeChange(data []byte, rels map[uint32]*relation) (change, error) {
	var c change
	bad := func(err error) (change, error) {
		return c, fatalf("source: cannot decode a %q message: %v", data[0], err)
	}
	if len(data) < 6 {
		return bad(errShort)
	}
	buf := append([]byte(nil), data...)
	c.op = buf[0]
	relID := binary.BigEndian.Uint32(buf[1:])
	off := 5
	next := func() (tuple, error) {
		t, n, err := decodeTuple(buf[off:])
		off += n
		return t, err
	}
	var err error
	switch c.op {
	case 'I':
		if buf[off] != 'N' {
			return bad(fmt.Errorf("tuple type %q", buf[off]))
		}
		off++
		c.newTup, err = next()
	case 'U':
		if buf[off] == 'K' || buf[off] == 'O' {
			off++
			if c.oldTup, err = next(); err != nil {
				return bad(err)
			}
		}
		if off >= len(buf) || buf[off] != 'N' {
			return bad(errors.New("no new tuple"))
		}
		off++
		c.newTup, err = next()
	case 'D':
		if buf[off] != 'K' && buf[off] != 'O' {
			return c, fatalf("a DELETE arrived without its key")
		}
		off++
		c.oldTup, err = next()
	default:
		return bad(errors.New("not a row change"))
	}
	if err != nil {
		return bad(err)
	}
	if off != len(buf) {
		return bad(fmt.Errorf("%d bytes left over", len(buf)-off))
	}
	rel, ok := rels[relID]
	if !ok {
		return c, fatalf("a change arrived for relation %d before its Relation message", relID)
	}
	if rel.dst == nil {
		return c, fatalf("the source sent changes of %s, which is not one of the tables of this move", rel.name)
	}
	c.rel = rel
	for _, t := range []tuple{c.newTup, c.oldTup} {
		if t != nil && len(t) != len(rel.cols) {
			return c, fatalf("a change of %s has %d columns, its Relation message %d", rel.name, len(t), len(rel.cols))
		}
		for _, v := range t {
			if v.kind == 'b' {
				return c, fatalf("a change of %s arrived in binary format, which the mover does not request", rel.name)
			}
		}
	}
	c.size = len(buf) + 16*len(rel.cols)
	return c, nil
}

// whereValues returns the values identifying the row a change applies to: from the old
// tuple if the change carries one, else from the new one.
func (c *change) whereValues() ([][]byte, error) {
	src := c.oldTup
	if src == nil {
		src = c.newTup
	}
	return c.rel.keyOf(src)
}

// keyOf returns the identity values of a tuple.
func (r *relation) keyOf(t tuple) ([][]byte, error) {
	vals := make([][]byte, len(r.where))
	for i, w := range r.where {
		if t[w].kind != 't' {
			return nil, fatalf("a change of %s lacks the value of its key column %q (status %q)", r.name, r.cols[w].name, t[w].kind)
		}
		vals[i] = t[w].data
	}
	return vals, nil
}
