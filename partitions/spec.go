package partitions

import (
	"fmt"
	"strings"
	"time"

	"github.com/reshard/reshard/catalog"
)

// DefaultPremake is how many periods after the current one are kept ready when a spec
// says nothing.
const DefaultPremake = 4

// spec is a validated PartitionSpec with its defaults filled in.
type spec struct {
	catalog.PartitionSpec
	zone    *time.Location
	premake int
	retN    int    // 0: keep everything
	retUnit string // day, week, month
	drop    bool   // retention action
}

// normalize validates every spec before anything is touched: one bad spec means nothing
// is done, with one error listing every problem.
func normalize(specs []catalog.PartitionSpec) ([]spec, error) {
	var problems []string
	seen := map[string]bool{}
	out := make([]spec, 0, len(specs))
	for _, ps := range specs {
		if err := catalog.ValidatePartitionSpec(ps, nil); err != nil {
			problems = append(problems, strings.TrimPrefix(err.Error(), catalog.ErrInvalid.Error()+": "))
			continue
		}
		if seen[ps.Table] {
			problems = append(problems, fmt.Sprintf("partitions of %s listed twice: keep one spec per table", ps.Table))
			continue
		}
		seen[ps.Table] = true
		s := spec{PartitionSpec: ps, premake: ps.Premake, drop: ps.RetentionAction == "drop"}
		if s.premake == 0 {
			s.premake = DefaultPremake
		}
		tz := ps.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		loc, err := time.LoadLocation(tz)
		if err != nil {
			problems = append(problems, fmt.Sprintf("partitions of %s: time_zone %q is unknown: use an IANA zone name such as UTC or Europe/Paris", ps.Table, tz))
			continue
		}
		s.zone = loc
		if ps.Retention != "" {
			s.retN, s.retUnit, _ = catalog.ParseRetention(ps.Retention)
		}
		out = append(out, s)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s (nothing was changed)", catalog.ErrInvalid, strings.Join(problems, "; "))
	}
	return out, nil
}
