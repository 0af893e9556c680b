package partitions

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// grant is one privilege held on a table by a role other than its owner.
type grant struct {
	Grantee   string `json:"grantee"` // role name, or PUBLIC
	Privilege string `json:"privilege"`
	Grantable bool   `json:"grantable"`
}

// child is one partition of a partitioned table, as the catalog (not its name) says.
type child struct {
	schema, name  string
	oid           uint32
	from, to      bound
	isDefault     bool
	pending       bool   // a DETACH CONCURRENTLY started and did not finish
	badBound      string // a bound this package cannot read: the partition is left alone
	owner         string
	replIdent     string // d, n, f or i (pg_class.relreplident)
	riParentIndex uint32 // the parent's index of the child's replica-identity index
	grants        []grant
}

// tableInfo is what discovery learned about one partitioned table on one shard.
type tableInfo struct {
	schema, name string
	oid          uint32
	column       string
	clock        clock
	owner        string
	replIdent    string
	riIndex      uint32 // the parent's replica-identity index, when replIdent is i
	riIndexName  string
	grants       []grant
	children     []child // every partition, DEFAULT and pending ones included
	def          *child
	taken        map[string]bool // candidate names already used by some relation in the schema
}

// attached is every partition that holds a known range right now.
func (ti *tableInfo) attached() []child {
	var out []child
	for _, c := range ti.children {
		if !c.isDefault && !c.pending && c.badBound == "" {
			out = append(out, c)
		}
	}
	return out
}

// createOp, removeOp and fixOp are what apply carries out.
type createOp struct {
	name     string
	from, to time.Time
	reason   string
}

type removeOp struct {
	c        child
	finalize bool // finish a pending DETACH CONCURRENTLY first
	reason   string
}

type fixOp struct {
	c         child
	owner     bool
	replIdent bool
	grants    []grant
}

func (f fixOp) reason(ti *tableInfo) string {
	var parts []string
	if f.owner {
		parts = append(parts, "owner "+f.c.owner+" -> "+ti.owner)
	}
	if f.replIdent {
		parts = append(parts, "replica identity "+replIdentName(ti.replIdent, ti.riIndexName))
	}
	if len(f.grants) > 0 {
		var gs []string
		for _, g := range f.grants {
			s := g.Privilege + " to " + g.Grantee
			if g.Grantable {
				s += " with grant option"
			}
			gs = append(gs, s)
		}
		parts = append(parts, "grant "+strings.Join(gs, ", "))
	}
	return "match the parent: " + strings.Join(parts, "; ")
}

func replIdentName(ri, index string) string {
	switch ri {
	case "n":
		return "NOTHING"
	case "f":
		return "FULL"
	case "i":
		return "USING INDEX (partition of " + index + ")"
	}
	return "DEFAULT"
}

type tablePlan struct {
	creates []createOp
	removes []removeOp
	fixes   []fixOp
	skipped []Change // periods already there
	kept    []Change // partitions retention leaves alone, and why
	errors  []string
}

// covering returns the partitions overlapping [from, to) and whether they cover it
// without a gap.
func covering(parts []child, from, to time.Time) ([]child, bool) {
	lo, hi := bound{t: from}, bound{t: to}
	var over []child
	for _, c := range parts {
		if c.from.before(hi) && lo.before(c.to) {
			over = append(over, c)
		}
	}
	sort.Slice(over, func(i, j int) bool { return over[i].from.before(over[j].from) })
	cur := lo
	for _, c := range over {
		if cur.before(c.from) {
			return over, false
		}
		if cur.before(c.to) {
			cur = c.to
		}
	}
	return over, len(over) > 0 && !cur.before(hi)
}

func names(cs []child) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.name)
	}
	return strings.Join(s, ", ")
}

// planTable decides, without I/O, what maintenance of one table needs at instant now.
func planTable(s spec, ti *tableInfo, now time.Time) tablePlan {
	var p tablePlan
	ck := ti.clock
	nowD := ck.now(now)
	cur := periodStart(nowD, s.Interval, ck.loc)
	attached := ti.attached()
	childNames := map[string]bool{}
	for _, c := range ti.children {
		childNames[c.name] = true
	}
	fixed := map[string]bool{}
	for k := 0; k <= s.premake; k++ {
		from, to := addPeriods(cur, s.Interval, k), addPeriods(cur, s.Interval, k+1)
		name := partitionName(ti.name, from)
		over, full := covering(attached, from, to)
		switch {
		case len(over) == 0 && ti.taken[name] && !childNames[name]:
			p.errors = append(p.errors, fmt.Sprintf("cannot create %s FROM (%s) TO (%s): a relation named %s.%s already exists and is not a partition of %s: rename or drop it (or attach it with ALTER TABLE %s ATTACH PARTITION ... if it holds that period's rows), then run apply again",
				name, ck.literal(from), ck.literal(to), ti.schema, name, ti.name, qualified(ti.schema, ti.name)))
		case len(over) == 0 && childNames[name]:
			p.errors = append(p.errors, fmt.Sprintf("cannot create %s FROM (%s) TO (%s): a partition of %s already has that name but other bounds: rename it (ALTER TABLE %s RENAME TO ...), then run apply again",
				name, ck.literal(from), ck.literal(to), ti.name, qualified(ti.schema, name)))
		case len(over) == 0:
			reason := "missing: the current period"
			if k > 0 {
				reason = fmt.Sprintf("missing: premake keeps %d %ss ahead (this is #%d)", s.premake, s.Interval, k)
			}
			p.creates = append(p.creates, createOp{name: name, from: from, to: to, reason: reason})
		case !full:
			p.errors = append(p.errors, fmt.Sprintf("cannot create %s FROM (%s) TO (%s): the period is only partly covered by %s; reshard creates whole %ss only: detach or re-cut those partitions on %s boundaries",
				name, ck.literal(from), ck.literal(to), names(over), s.Interval, s.Interval))
		default:
			reason := "exists"
			o := over[0]
			if len(over) > 1 || o.name != name || o.from.min || o.to.max || !o.from.t.Equal(from) || !o.to.t.Equal(to) {
				reason = "covered by " + names(over)
			}
			p.skipped = append(p.skipped, Change{Partition: name, From: ck.literal(from), To: ck.literal(to), Reason: reason})
			for _, c := range over {
				if fixed[c.name] {
					continue
				}
				fixed[c.name] = true
				if f, ok := needsFix(ti, c); ok {
					p.fixes = append(p.fixes, f)
				}
			}
		}
	}
	p.removes, p.kept = planRetention(s, ti, now, len(p.creates))
	return p
}

// planRetention decides which partitions retention removes, given how many partitions
// are (or, in a plan, will be) created meanwhile: the last partition is never removed.
func planRetention(s spec, ti *tableInfo, now time.Time, created int) ([]removeOp, []Change) {
	var (
		removes []removeOp
		kept    []Change
	)
	ck := ti.clock
	attached := ti.attached()
	if s.retN == 0 {
		for _, c := range ti.children {
			if c.pending {
				kept = append(kept, Change{Partition: c.name, From: ck.show(c.from), To: ck.show(c.to),
					Reason: "a DETACH PARTITION CONCURRENTLY did not finish and no retention is set: finish it with ALTER TABLE " + qualified(ti.schema, ti.name) + " DETACH PARTITION " + qualified(c.schema, c.name) + " FINALIZE"})
			}
		}
		return nil, kept
	}
	cutoff := retentionCutoff(ck.now(now), s.retN, s.retUnit)
	action := "detach"
	if s.drop {
		action = "drop"
	}
	why := fmt.Sprintf("past retention %s: every row is before %s (retention_action %s)", s.Retention, ck.literal(cutoff), action)
	expired := func(c child) bool { return !c.to.max && !c.to.min && !c.to.t.After(cutoff) }
	var old []child
	for _, c := range attached {
		if expired(c) {
			old = append(old, c)
		}
	}
	// Never leave the table without a partition: rows would all go to DEFAULT (or fail).
	if len(old) > 0 && len(attached)-len(old)+created == 0 {
		sort.Slice(old, func(i, j int) bool { return old[i].to.before(old[j].to) })
		last := old[len(old)-1]
		old = old[:len(old)-1]
		kept = append(kept, Change{Partition: last.name, From: ck.show(last.from), To: ck.show(last.to),
			Reason: "past retention but kept: it is the last partition, and reshard never removes the last one"})
	}
	// A pending detach first: PostgreSQL allows only one per table, and it blocks the others.
	for _, c := range ti.children {
		if !c.pending || c.badBound != "" {
			continue
		}
		if expired(c) {
			removes = append(removes, removeOp{c: c, finalize: true, reason: "a DETACH PARTITION CONCURRENTLY did not finish; finishing it: " + why})
		} else {
			kept = append(kept, Change{Partition: c.name, From: ck.show(c.from), To: ck.show(c.to),
				Reason: "a DETACH PARTITION CONCURRENTLY did not finish and the partition is not past retention: finish it with ALTER TABLE " + qualified(ti.schema, ti.name) + " DETACH PARTITION " + qualified(c.schema, c.name) + " FINALIZE"})
		}
	}
	for _, c := range old {
		removes = append(removes, removeOp{c: c, reason: why})
	}
	return removes, kept
}

// needsFix compares a partition with its parent: owner, replica identity and grants.
// Grants the partition has beyond the parent's are left alone.
func needsFix(ti *tableInfo, c child) (fixOp, bool) {
	f := fixOp{c: c}
	f.owner = c.owner != ti.owner
	switch {
	case ti.replIdent == "i":
		f.replIdent = c.replIdent != "i" || c.riParentIndex != ti.riIndex
	case ti.replIdent == "d" && c.replIdent == "i":
		// The parent says "the primary key"; an explicit index on the child is a choice
		// someone made on purpose: leave it.
	default:
		f.replIdent = c.replIdent != ti.replIdent
	}
	have := map[string]bool{}
	for _, g := range c.grants {
		have[g.Grantee+"\x00"+g.Privilege+"\x00"+fmt.Sprint(g.Grantable)] = true
		if g.Grantable {
			have[g.Grantee+"\x00"+g.Privilege+"\x00false"] = true
		}
	}
	for _, g := range ti.grants {
		if !have[g.Grantee+"\x00"+g.Privilege+"\x00"+fmt.Sprint(g.Grantable)] {
			f.grants = append(f.grants, g)
		}
	}
	return f, f.owner || f.replIdent || len(f.grants) > 0
}

// runway counts the whole periods after the current one covered without a gap.
func runway(s spec, ti *tableInfo, now time.Time) (int, *time.Time) {
	ck := ti.clock
	cur := periodStart(ck.now(now), s.Interval, ck.loc)
	parts := ti.attached()
	sort.Slice(parts, func(i, j int) bool { return parts[i].from.before(parts[j].from) })
	// Walk the partitions from the current period's start while they touch or overlap.
	end := bound{t: cur}
	for _, c := range parts {
		if end.before(c.from) {
			break
		}
		if end.before(c.to) {
			end = c.to
		}
	}
	const most = 10000 // a MAXVALUE partition covers forever; stop counting somewhere
	if !end.max && end.t.Before(addPeriods(cur, s.Interval, 1)) {
		return 0, nil
	}
	n := 0
	for n < most && (end.max || !end.t.Before(addPeriods(cur, s.Interval, n+2))) {
		n++
	}
	until := addPeriods(cur, s.Interval, n+1)
	return n, &until
}

func qualified(schema, name string) string {
	return quoteIdent(schema) + "." + quoteIdent(name)
}

// quoteIdent quotes an identifier only when PostgreSQL needs it, so messages stay readable.
func quoteIdent(s string) string {
	plain := s != ""
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain && !reserved[s] {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// reserved are PostgreSQL's reserved key words (SQL key words appendix, PostgreSQL 15),
// which cannot be bare table names. Only messages use quoteIdent: executed SQL always
// quotes with pgx.Identifier.
var reserved = map[string]bool{"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true, "as": true, "asc": true, "asymmetric": true, "both": true, "case": true, "cast": true, "check": true, "collate": true, "column": true, "constraint": true, "create": true, "current_catalog": true, "current_date": true, "authorization": true, "binary": true, "collation": true, "concurrently": true, "cross": true, "current_schema": true, "freeze": true, "full": true, "ilike": true, "inner": true, "is": true, "isnull": true, "join": true, "left": true, "like": true, "natural": true, "notnull": true, "outer": true, "overlaps": true, "right": true, "similar": true, "tablesample": true, "verbose": true, "current_role": true, "current_time": true, "current_timestamp": true, "current_user": true, "default": true, "deferrable": true, "desc": true, "distinct": true, "do": true, "else": true, "end": true, "except": true, "false": true, "fetch": true, "for": true, "foreign": true, "from": true, "grant": true, "group": true, "having": true, "in": true, "initially": true, "intersect": true, "into": true, "lateral": true, "leading": true, "limit": true, "localtime": true, "localtimestamp": true, "not": true, "null": true, "offset": true, "on": true, "only": true, "or": true, "order": true, "placing": true, "primary": true, "references": true, "returning": true, "select": true, "session_user": true, "some": true, "symmetric": true, "table": true, "then": true, "to": true, "trailing": true, "true": true, "union": true, "unique": true, "user": true, "using": true, "variadic": true, "when": true, "where": true, "window": true, "with": true}
