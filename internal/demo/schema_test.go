package demo

import (
	"strings"
	"testing"
	"time"
)

// TestSchemaPartitions: the schema has a partition per data day and day ahead, and a
// default, and none outside them.
func TestSchemaPartitions(t *testing.T) {
	sql := SchemaSQL(time.Date(2026, 11, 24, 23, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"events_p20261118 PARTITION OF events FOR VALUES FROM ('2026-11-18T00:00:00Z') TO ('2026-11-19T00:00:00Z')",
		"events_p20261126 PARTITION OF events",
		"events_default PARTITION OF events DEFAULT",
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("schema lacks %q", want)
		}
	}
	if strings.Contains(sql, "events_p20261117") || strings.Contains(sql, "events_p20261127") {
		t.Error("schema has partitions outside the data days and the days ahead")
	}
}
