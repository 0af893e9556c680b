package partitions

import (
	"fmt"
	"strings"
	"time"
)

// colKind is the type of the partition key column; it decides how bounds are written and
// in which clock periods are counted.
type colKind int

const (
	kindTimestamptz colKind = iota
	kindTimestamp           // timestamp without time zone: wall-clock values
	kindDate
)

func (k colKind) String() string {
	switch k {
	case kindDate:
		return "date"
	case kindTimestamp:
		return "timestamp without time zone"
	}
	return "timestamp with time zone"
}

// kindOf maps format_type() output to a colKind.
func kindOf(typ string) (colKind, bool) {
	switch {
	case typ == "date":
		return kindDate, true
	case strings.HasPrefix(typ, "timestamp") && strings.HasSuffix(typ, "with time zone") && !strings.HasSuffix(typ, "without time zone"):
		return kindTimestamptz, true
	case strings.HasPrefix(typ, "timestamp"):
		return kindTimestamp, true
	}
	return 0, false
}

// clock is where periods are counted. A timestamptz column is cut at midnight in the
// spec's zone (an instant). A date or timestamp column has no zone of its own: its values
// are wall-clock, so periods are counted on the wall clock (held in UTC, where no day is
// 23 or 25 hours long) and the spec's zone only decides what "now" is on that wall clock.
type clock struct {
	kind colKind
	loc  *time.Location // where the calendar is counted: the zone, or UTC for wall clocks
	zone *time.Location // the spec's zone
}

func newClock(kind colKind, zone *time.Location) clock {
	if kind == kindTimestamptz {
		return clock{kind: kind, loc: zone, zone: zone}
	}
	return clock{kind: kind, loc: time.UTC, zone: zone}
}

// now converts a real instant into the clock's domain.
func (c clock) now(t time.Time) time.Time {
	if c.kind == kindTimestamptz {
		return t.In(c.loc)
	}
	w := t.In(c.zone)
	return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), time.UTC)
}

// periodStart is the start of the period (day, ISO week from Monday, or month) holding t.
func periodStart(t time.Time, interval string, loc *time.Location) time.Time {
	t = t.In(loc)
	y, m, d := t.Date()
	switch interval {
	case "week":
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, loc)
	case "month":
		return time.Date(y, m, 1, 0, 0, 0, 0, loc)
	}
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// addPeriods moves a period start n periods on the calendar (never by a fixed duration, so
// a DST change or a month's length does not shift midnight).
func addPeriods(start time.Time, interval string, n int) time.Time {
	y, m, d := start.Date()
	loc := start.Location()
	switch interval {
	case "week":
		return time.Date(y, m, d+7*n, 0, 0, 0, 0, loc)
	case "month":
		return time.Date(y, m+time.Month(n), 1, 0, 0, 0, 0, loc)
	}
	return time.Date(y, m, d+n, 0, 0, 0, 0, loc)
}

// retentionCutoff is now minus the retention, on the calendar. A partition whose upper
// bound is at or before it holds only rows older than the retention.
func retentionCutoff(now time.Time, n int, unit string) time.Time {
	switch unit {
	case "week":
		return now.AddDate(0, 0, -7*n)
	case "month":
		return now.AddDate(0, -n, 0)
	}
	return now.AddDate(0, 0, -n)
}

// partitionName is the deterministic name of the partition starting at start.
func partitionName(table string, start time.Time) string {
	return table + "_p" + start.Format("20060102")
}

// literal writes a bound value the way the column type reads it: a date, a wall-clock
// timestamp, or an instant with an explicit offset (so the server's TimeZone plays no part).
func (c clock) literal(t time.Time) string {
	t = t.In(c.loc)
	switch c.kind {
	case kindDate:
		return t.Format("2006-01-02")
	case kindTimestamp:
		return t.Format("2006-01-02 15:04:05")
	}
	if t.Second() != 0 || t.Nanosecond() != 0 {
		return t.Format("2006-01-02 15:04:05.999999-07:00")
	}
	return t.Format("2006-01-02 15:04:05-07:00")
}

// sqlLiteral is literal quoted and cast, ready to paste into SQL.
func (c clock) sqlLiteral(t time.Time) string {
	return "'" + c.literal(t) + "'::" + c.kind.String()
}

// bound is one side of a range partition's bound.
type bound struct {
	t   time.Time
	min bool // MINVALUE or -infinity
	max bool // MAXVALUE or infinity
}

func (b bound) before(o bound) bool { // b < o
	switch {
	case b.min:
		return !o.min
	case b.max:
		return false
	case o.min:
		return false
	case o.max:
		return true
	}
	return b.t.Before(o.t)
}

func (c clock) show(b bound) string {
	switch {
	case b.min:
		return "MINVALUE"
	case b.max:
		return "MAXVALUE"
	}
	return c.literal(b.t)
}

// parseBoundExpr reads pg_get_expr(relpartbound) of a range partition of a one-column key,
// as printed with TimeZone=UTC and DateStyle=ISO. isDefault reports the DEFAULT partition.
func (c clock) parseBoundExpr(expr string) (from, to bound, isDefault bool, err error) {
	if expr == "DEFAULT" {
		return bound{}, bound{}, true, nil
	}
	rest, ok := strings.CutPrefix(expr, "FOR VALUES FROM (")
	if !ok {
		return bound{}, bound{}, false, fmt.Errorf("not a range bound: %s", expr)
	}
	lo, hi, ok := strings.Cut(rest, ") TO (")
	if !ok || !strings.HasSuffix(hi, ")") {
		return bound{}, bound{}, false, fmt.Errorf("not a range bound: %s", expr)
	}
	hi = strings.TrimSuffix(hi, ")")
	if from, err = c.parseBoundValue(lo); err != nil {
		return bound{}, bound{}, false, err
	}
	if to, err = c.parseBoundValue(hi); err != nil {
		return bound{}, bound{}, false, err
	}
	return from, to, false, nil
}

func (c clock) parseBoundValue(v string) (bound, error) {
	switch v {
	case "MINVALUE":
		return bound{min: true}, nil
	case "MAXVALUE":
		return bound{max: true}, nil
	}
	if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
		return bound{}, fmt.Errorf("bound value %s: expected one quoted literal (a one-column key)", v)
	}
	s := strings.ReplaceAll(v[1:len(v)-1], "''", "'")
	switch s {
	case "-infinity":
		return bound{min: true}, nil
	case "infinity":
		return bound{max: true}, nil
	}
	var layout string
	switch c.kind {
	case kindDate:
		layout = "2006-01-02"
	case kindTimestamp:
		layout = "2006-01-02 15:04:05.999999999"
	default:
		layout = "2006-01-02 15:04:05.999999999-07"
		if n := len(s); n > 6 && (s[n-6] == '+' || s[n-6] == '-') && s[n-3] == ':' { // offset printed as +05:30
			layout = "2006-01-02 15:04:05.999999999-07:00"
		}
	}
	t, err := time.ParseInLocation(layout, s, time.UTC)
	if err != nil {
		return bound{}, fmt.Errorf("bound value %s: %w", v, err)
	}
	return bound{t: t.In(c.loc)}, nil
}
