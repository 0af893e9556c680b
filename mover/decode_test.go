package mover

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

func TestNewRelation(t *testing.T) {
	tb := testTable()
	tables := map[string]*table{"public.orders": tb}
	msg := &pglogrepl.RelationMessage{RelationID: 9, Namespace: "public", RelationName: "orders", ReplicaIdentity: 'd', Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "tenant_id", Flags: 1}, {Name: "id", Flags: 1}, {Name: "note"}, {Name: "total"},
	}}
	rel, err := newRelation(msg, tables, catalog.RangeOn("tenant_id"))
	if err != nil || fmt.Sprint(rel.where) != "[0 1]" || rel.key != 0 {
		t.Fatalf("newRelation = %+v, %v", rel, err)
	}
	full := *msg
	full.ReplicaIdentity = 'f'
	full.Columns = []*pglogrepl.RelationMessageColumn{{Name: "tenant_id", Flags: 1}, {Name: "id", Flags: 1}, {Name: "note", Flags: 1}, {Name: "total", Flags: 1}}
	if rel, err := newRelation(&full, tables, catalog.RangeOn("tenant_id")); err != nil || fmt.Sprint(rel.where) != "[0 1]" {
		t.Errorf("REPLICA IDENTITY FULL must identify rows by the primary key: %+v, %v", rel, err)
	}
	// PostgreSQL 15 describes a leaf partition too, although its changes name the root:
	// only a change of a relation outside the move is an error.
	other := *msg
	other.RelationName = "orders_p1"
	other.RelationID = 10
	leaf, err := newRelation(&other, tables, catalog.RangeOn("tenant_id"))
	if err != nil {
		t.Fatalf("a Relation message outside the move: %v", err)
	}
	ins := encodeChange('I', 10, 0, nil, tuple{})
	if _, err := decodeChange(ins, map[uint32]*relation{10: leaf}); err == nil || transient(err) {
		t.Errorf("a change of a relation outside the move must be a fatal error: %v", err)
	}
	altered := *msg
	altered.Columns = append(append([]*pglogrepl.RelationMessageColumn{}, msg.Columns...), &pglogrepl.RelationMessageColumn{Name: "added"})
	if _, err := newRelation(&altered, tables, catalog.RangeOn("tenant_id")); err == nil || !strings.Contains(err.Error(), `"added"`) {
		t.Errorf("a column missing on the target: %v", err)
	}
}

// encodeChange writes a pgoutput protocol 1 Insert, Update or Delete message.
func encodeChange(op byte, rel uint32, oldKind byte, old, new tuple) []byte {
	b := []byte{op}
	b = binary.BigEndian.AppendUint32(b, rel)
	put := func(t tuple) {
		b = binary.BigEndian.AppendUint16(b, uint16(len(t)))
		for _, c := range t {
			b = append(b, c.kind)
			if c.kind == 't' || c.kind == 'b' {
				b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
				b = append(b, c.data...)
			}
		}
	}
	if old != nil {
		b = append(b, oldKind)
		put(old)
	}
	if new != nil {
		b = append(b, 'N')
		put(new)
	}
	return b
}

func TestDecodeChange(t *testing.T) {
	rel := testRelation()
	rels := map[uint32]*relation{7: rel}
	null, toast := col{kind: 'n'}, col{kind: 'u'}
	for _, tc := range []struct {
		name string
		msg  []byte
		want string // op, old, new; or the error
	}{
		{"insert", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")}), "I [] [5 1 <n> 9.50]"},
		{"update", encodeChange('U', 7, 0, nil, tuple{txt("5"), txt("1"), toast, txt("1")}), "U [] [5 1 <u> 1]"},
		{"update of the key", encodeChange('U', 7, 'K', tuple{txt("5"), txt("1"), null, null}, tuple{txt("6"), txt("1"), toast, txt("1")}), "U [5 1 <n> <n>] [6 1 <u> 1]"},
		{"delete", encodeChange('D', 7, 'K', tuple{txt("5"), txt("1"), null, null}, nil), "D [5 1 <n> <n>] []"},
		{"delete without key", encodeChange('D', 7, 0, nil, tuple{txt("5"), txt("1"), null, null}), "a DELETE arrived without its key"},
		{"unknown relation", encodeChange('I', 8, 0, nil, tuple{txt("5"), txt("1"), null, null}), "before its Relation message"},
		{"wrong width", encodeChange('I', 7, 0, nil, tuple{txt("5")}), "has 1 columns"},
		{"binary", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, {kind: 'b', data: []byte{1}}}), "binary format"},
		{"truncated", encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")})[:20], "cannot decode"},
	} {
		c, err := decodeChange(tc.msg, rels)
		got := ""
		if err != nil {
			got = err.Error()
			if transient(err) {
				t.Errorf("%s: a decode error must be fatal", tc.name)
			}
		} else {
			show := func(tp tuple) string {
				var p []string
				for _, v := range tp {
					if v.kind == 't' {
						p = append(p, string(v.data))
					} else {
						p = append(p, "<"+string(v.kind)+">")
					}
				}
				return "[" + strings.Join(p, " ") + "]"
			}
			got = fmt.Sprintf("%c %s %s", c.op, show(c.oldTup), show(c.newTup))
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	// The change owns its bytes: the receive buffer is reused.
	msg := encodeChange('I', 7, 0, nil, tuple{txt("5"), txt("1"), null, txt("9.50")})
	c, _ := decodeChange(msg, rels)
	for i := range msg {
		msg[i] = 'x'
	}
	if string(c.newTup[3].data) != "9.50" {
		t.Errorf("decoded values alias the message buffer")
	}
}

func TestChangeWhereValues(t *testing.T) {
	rel := testRelation()
	null, toast := col{kind: 'n'}, col{kind: 'u'}
	c := change{rel: rel, op: 'U', newTup: tuple{txt("7"), txt("1"), toast, txt("9.50")}}
	if v, err := c.whereValues(); err != nil || fmt.Sprintf("%s", v) != "[7 1]" {
		t.Errorf("key from the new tuple: %s, %v", v, err)
	}
	c.oldTup = tuple{txt("6"), txt("1"), null, null}
	if v, err := c.whereValues(); err != nil || fmt.Sprintf("%s", v) != "[6 1]" {
		t.Errorf("key from the old tuple: %s, %v", v, err)
	}
	bad := change{rel: rel, op: 'U', newTup: tuple{toast, txt("1"), null, null}}
	if _, err := bad.whereValues(); err == nil {
		t.Error("a key column without a value must be an error")
	}
}
