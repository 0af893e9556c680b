package mover

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
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
}

type relColumn struct {
	name string
	typ  string // the target column's type, for casts
	pk   bool   // part of the target's primary key
}

// newRelation resolves a Relation message against the target tables (keyed schema.table).
func newRelation(msg *pglogrepl.RelationMessage, tables map[string]*table, key string) (*relation, error) {
	name := msg.Namespace + "." + msg.RelationName
	dst, ok := tables[name]
	if !ok {
		// With publish_via_partition_root, PostgreSQL 15 also describes the leaf partition
		// a change came from, although the change itself names the root. Only a change
		// that names an unknown relation is an error (see decodeChange).
		return &relation{id: msg.RelationID, name: name}, nil
	}
	r := &relation{id: msg.RelationID, name: name, dst: dst, full: msg.ReplicaIdentity == 'f', key: -1}
	pk := map[string]bool{}
	for _, c := range dst.PK {
		pk[c] = true
	}
	for i, c := range msg.Columns {
		dc := dst.column(c.Name)
		if dc == nil || dc.Generated {
			return nil, fatalf("column %q of %s is not a plain column on the target (was the table altered during the move?): add it on the target, then restart the mover", c.Name, name)
		}
		r.cols = append(r.cols, relColumn{name: c.Name, typ: dc.Type, pk: pk[c.Name]})
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
	return r, nil
}

// change is one decoded row change.
type change struct {
	rel    *relation
	op     byte // 'I', 'U', 'D'
	newTup *pglogrepl.TupleData
	oldTup *pglogrepl.TupleData // the key ('K') or full old row ('O'), if sent
	size   int
}

// segment is a piece of the stream handed from the receiver to the applier: changes of one
// source transaction (a large transaction comes as several segments, the first with begin,
// the last with commit), or a keepalive position when no transaction is open.
type segment struct {
	begin      bool
	finalLSN   pglogrepl.LSN // commit LSN announced by Begin
	changes    []change
	commit     bool
	endLSN     pglogrepl.LSN // Commit.TransactionEndLSN: what is acknowledged once applied
	commitTime time.Time
	// keepalive: nothing is pending before walEnd other than what came earlier.
	keepalive  bool
	walEnd     pglogrepl.LSN
	serverTime time.Time
}

func tupleSize(t *pglogrepl.TupleData) int {
	if t == nil {
		return 0
	}
	n := 0
	for _, c := range t.Columns {
		n += len(c.Data) + 8
	}
	return n
}

// decodeChange turns an Insert, Update or Delete message into a change.
func decodeChange(msg pglogrepl.Message, rels map[uint32]*relation) (change, error) {
	var c change
	var relID uint32
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		relID, c.op, c.newTup = m.RelationID, 'I', m.Tuple
	case *pglogrepl.UpdateMessage:
		relID, c.op, c.newTup, c.oldTup = m.RelationID, 'U', m.NewTuple, m.OldTuple
	case *pglogrepl.DeleteMessage:
		relID, c.op, c.oldTup = m.RelationID, 'D', m.OldTuple
		if c.oldTup == nil {
			return c, fatalf("a DELETE arrived without its key")
		}
	default:
		return c, fmt.Errorf("decode: unexpected message %T", msg)
	}
	rel, ok := rels[relID]
	if !ok {
		return c, fatalf("a change arrived for relation %d before its Relation message", relID)
	}
	if rel.dst == nil {
		return c, fatalf("the source sent changes of %s, which is not one of the tables of this move", rel.name)
	}
	c.rel = rel
	for _, t := range []*pglogrepl.TupleData{c.newTup, c.oldTup} {
		if t == nil {
			continue
		}
		if len(t.Columns) != len(rel.cols) {
			return c, fatalf("a change of %s has %d columns, its Relation message %d", rel.name, len(t.Columns), len(rel.cols))
		}
		for _, col := range t.Columns {
			if col.DataType == pglogrepl.TupleDataTypeBinary {
				return c, fatalf("a change of %s arrived in binary format, which the mover does not request", rel.name)
			}
		}
	}
	c.size = tupleSize(c.newTup) + tupleSize(c.oldTup) + 16
	return c, nil
}

// whereValues returns the values identifying the row a change applies to: from the old
// tuple if the change carries one, else from the new one.
func (c *change) whereValues() ([][]byte, error) {
	src := c.oldTup
	if src == nil {
		src = c.newTup
	}
	vals := make([][]byte, len(c.rel.where))
	for i, w := range c.rel.where {
		col := src.Columns[w]
		if col.DataType != pglogrepl.TupleDataTypeText {
			return nil, fatalf("a change of %s lacks the value of its key column %q (status %q)", c.rel.name, c.rel.cols[w].name, col.DataType)
		}
		vals[i] = col.Data
	}
	return vals, nil
}
