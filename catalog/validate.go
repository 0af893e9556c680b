package catalog

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid catalog")

// nameRE is what a cluster, shard or identifier may look like: it ends up in etcd keys,
// slot names and SQL identifiers.
var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// ValidName reports whether s is a sane cluster, shard, table or column name.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Problems collects every violation so the user fixes them all in one go.
type Problems []string

func (p *Problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// Err returns nil or one error listing every problem.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	if len(p) == 1 {
		return fmt.Errorf("%w: %s", ErrInvalid, p[0])
	}
	return fmt.Errorf("%w:\n  - %s", ErrInvalid, strings.Join(p, "\n  - "))
}

// ValidateConfig checks the keyspace definition.
func ValidateConfig(c Config) error {
	var p Problems
	if !ValidName(c.Cluster) {
		p.add("cluster name %q: use lower-case letters, digits and _ (at most 48), starting with a letter", c.Cluster)
	}
	if !validColumn(c.Key) {
		p.add("key column %q: name the column that holds the tenant key, such as tenant_id (as PostgreSQL stores it, at most 63 bytes)", c.Key)
	}
	if len(c.Tables) == 0 {
		p.add("no sharded tables: list them under tables:")
	}
	seen := map[string]bool{}
	for _, t := range c.Tables {
		if _, err := SplitTableName(t); err != nil {
			p.add("%v: write table or schema.table, with a part in double quotes if it holds a dot", err)
		}
		if seen[t] {
			p.add("table %q listed twice", t)
		}
		seen[t] = true
	}
	for t, col := range c.TableKeys {
		if !seen[t] {
			p.add("key column %q of table %q: the table is not in tables:", col, t)
		}
		if !validColumn(col) {
			p.add("table %s: key column %q: name a column of the table (at most 63 bytes)", t, col)
		}
	}
	p.keyspace(c)
	for _, ps := range c.Partitions {
		if err := ValidatePartitionSpec(ps, seen); err != nil {
			p.add("%s", strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
		}
	}
	return p.Err()
}

// keyspace checks the distribution and the key type: range distribution compares the key
// itself with the bounds, so only an integer key can use it.
func (p *Problems) keyspace(c Config) {
	switch c.Distribution {
	case "", DistRange, DistHash:
	default:
		p.add("distribution %q: use range (integer keys compared with the ranges' bounds) or hash (the key's 64-bit hash)", c.Distribution)
		return
	}
	if c.KeyType == "" {
		return
	}
	if _, err := ParseKeyType(string(c.KeyType)); err != nil {
		p.add("%v", err)
		return
	}
	if c.Keyspace().Dist() == DistRange && !c.KeyType.Integer() {
		p.add("distribution range needs an integer key, and the key is %s: set distribution: hash", c.KeyType)
	}
}

// validColumn reports whether s can name a column: PostgreSQL stores at most 63 bytes
// and no NUL.
func validColumn(s string) bool {
	return s != "" && len(s) <= 63 && !strings.ContainsRune(s, 0)
}

// ValidatePartitionSpec checks one partition spec; tables, if not nil, are the sharded ones.
func ValidatePartitionSpec(ps PartitionSpec, tables map[string]bool) error {
	var p Problems
	if _, err := SplitTableName(ps.Table); err != nil {
		p.add("partitions: %v", err)
	}
	if !ValidName(ps.Column) {
		p.add("partitions of %s: column %q is not a plain column name", ps.Table, ps.Column)
	}
	switch ps.Interval {
	case "day", "week", "month":
	default:
		p.add("partitions of %s: interval %q: use day, week or month", ps.Table, ps.Interval)
	}
	if ps.Premake < 0 || ps.Premake > 1000 {
		p.add("partitions of %s: premake %d: use 1..1000", ps.Table, ps.Premake)
	}
	if ps.Retention != "" {
		if _, _, err := ParseRetention(ps.Retention); err != nil {
			p.add("partitions of %s: %v", ps.Table, err)
		}
	}
	switch ps.RetentionAction {
	case "", "detach", "drop":
	default:
		p.add("partitions of %s: retention_action %q: use detach or drop", ps.Table, ps.RetentionAction)
	}
	return p.Err()
}

// ParseRetention parses "30d", "12w" or "6m" into a count and a unit (day, week, month).
func ParseRetention(s string) (int, string, error) {
	if len(s) < 2 {
		return 0, "", fmt.Errorf("retention %q: write a count and a unit, e.g. 30d, 12w or 6m", s)
	}
	var n int
	if _, err := fmt.Sscanf(s[:len(s)-1], "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s[:len(s)-1] {
		return 0, "", fmt.Errorf("retention %q: write a positive count and a unit, e.g. 30d, 12w or 6m", s)
	}
	switch s[len(s)-1] {
	case 'd':
		return n, "day", nil
	case 'w':
		return n, "week", nil
	case 'm':
		return n, "month", nil
	}
	return 0, "", fmt.Errorf("retention %q: unit must be d, w or m (days, weeks, months)", s)
}

// ValidateShard checks a shard definition. A DSN must not carry a password.
func ValidateShard(s Shard) error {
	var p Problems
	if !ValidName(s.Name) {
		p.add("shard name %q: use lower-case letters, digits and _ (at most 48), starting with a letter", s.Name)
	}
	switch {
	case s.DSN == "" && s.DSNEnv == "":
		p.add("shard %s: give dsn or dsn_env", s.Name)
	case s.DSN != "" && s.DSNEnv != "":
		p.add("shard %s: give dsn or dsn_env, not both", s.Name)
	case s.DSN != "" && DSNHasPassword(s.DSN):
		p.add("shard %s: its dsn carries a password, which would be stored in etcd: remove it and use dsn_env (a variable holding the DSN) or a .pgpass file (%s)", s.Name, MaskDSN(s.DSN))
	}
	switch s.State {
	case "", ShardActive, ShardDraining:
	default:
		p.add("shard %s: state %q: use active or draining", s.Name, s.State)
	}
	return p.Err()
}

// ValidateRanges checks that ranges tile the whole int64 line with no gap or overlap, that
// every range names a known shard, and that states are known. Every problem is reported.
func ValidateRanges(ranges []Range, shards map[string]Shard) error {
	var p Problems
	if len(ranges) == 0 {
		p.add("no ranges: the key line must be covered, e.g. one range \":\" on one shard")
		return p.Err()
	}
	rs := append([]Range(nil), ranges...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Range.Lo < rs[j].Range.Lo })
	if rs[0].Range.Lo != math.MinInt64 {
		p.add("gap below %d: the first range must start unbounded (e.g. \":%d\")", rs[0].Range.Lo, rs[0].Range.Lo)
	}
	for i, r := range rs {
		if r.Range.Empty() {
			p.add("range %s is empty", r.Range)
		}
		if shards != nil {
			if _, ok := shards[r.Shard]; !ok {
				p.add("range %s: unknown shard %q (add it with `reshard shard add` or fix the range)", r.Range, r.Shard)
			}
		}
		switch r.State {
		case "", RangeServing, RangeFrozen:
		default:
			p.add("range %s: state %q: use serving or frozen", r.Range, r.State)
		}
		if i == len(rs)-1 {
			if !r.Range.HiInf {
				p.add("gap above %d: the last range must end unbounded (e.g. \"%d:\")", r.Range.Hi, r.Range.Lo)
			}
			break
		}
		next := rs[i+1].Range
		switch {
		case r.Range.HiInf || next.Lo < r.Range.Hi:
			p.add("ranges %s and %s overlap: make the first end where the second starts", r.Range, next)
		case next.Lo > r.Range.Hi:
			p.add("gap between %s and %s: keys %d..%d have no shard", r.Range, next, r.Range.Hi, next.Lo-1)
		}
	}
	return p.Err()
}

// ValidateState checks a whole catalog snapshot.
func ValidateState(s *State) error {
	var p Problems
	if err := ValidateConfig(s.Config); err != nil {
		p = append(p, problemsOf(err)...)
	}
	for _, sh := range sortedShards(s.Shards) {
		if err := ValidateShard(sh); err != nil {
			p = append(p, problemsOf(err)...)
		}
	}
	if err := ValidateRanges(s.Ranges, s.Shards); err != nil {
		p = append(p, problemsOf(err)...)
	}
	return p.Err()
}

func problemsOf(err error) []string {
	s := strings.TrimPrefix(err.Error(), ErrInvalid.Error()+":")
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "- ") {
		return []string{s}
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimPrefix(strings.TrimSpace(l), "- "))
	}
	return out
}

func sortedShards(m map[string]Shard) []Shard {
	out := make([]Shard, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// EvenRanges splits the key line into n ranges of equal width, assigned to shards in order.
func EvenRanges(shards []string) []Range {
	n := len(shards)
	out := make([]Range, 0, n)
	width := math.Exp2(64) / float64(n)
	lo := int64(math.MinInt64)
	for i, sh := range shards {
		r := KeyRange{Lo: lo, HiInf: true}
		if i < n-1 {
			hi := int64(math.MinInt64) + int64(uint64(width*float64(i+1)))
			r = KeyRange{Lo: lo, Hi: hi}
			lo = hi
		}
		out = append(out, Range{Range: r, Shard: sh, State: RangeServing, Epoch: 1})
	}
	return out
}
