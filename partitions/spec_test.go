package partitions

import (
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
)

func TestNormalize(t *testing.T) {
	good := catalog.PartitionSpec{Table: "events", Column: "created_at", Interval: "day"}
	ss, err := normalize([]catalog.PartitionSpec{good})
	if err != nil {
		t.Fatal(err)
	}
	if ss[0].premake != DefaultPremake || ss[0].zone != time.UTC || ss[0].drop || ss[0].retN != 0 {
		t.Errorf("defaults not filled: %+v", ss[0])
	}
	bad := []struct {
		specs []catalog.PartitionSpec
		want  string
	}{
		{[]catalog.PartitionSpec{good, good}, "listed twice"},
		{[]catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "hour"}}, "use day, week or month"},
		{[]catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", TimeZone: "Mars/Olympus"}}, "time_zone \"Mars/Olympus\" is unknown"},
		{[]catalog.PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", Retention: "30x"}}, "unit must be d, w or m"},
	}
	for _, tc := range bad {
		_, err := normalize(tc.specs)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("normalize(%+v) = %v, want an error containing %q", tc.specs, err, tc.want)
		}
	}
}
