package demo

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestLoadRecordChanges: a load that ended contributes its changes; one without an end
// (still running, or killed) leaves every tenant it could write uncertain, its quiet ones
// exact; a load that started before the fingerprint is refused.
func TestLoadRecordChanges(t *testing.T) {
	start := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	rec := NewLoadRecord(42, start.Add(time.Second), map[int64]bool{2: true})
	ch := rec.changes([]int64{1, 2, 3})
	if !ch.Uncertain[1] || !ch.Uncertain[3] || ch.Uncertain[2] || !ch.Quiet[2] {
		t.Errorf("unfinished load: %+v", ch)
	}
	res := &Result{Changes: &Changes{Touched: map[int64]bool{1: true}, Rows: map[int64]Counts{1: {"orders": 1}}}}
	rec.Finish(res, start.Add(time.Minute))
	if ch := rec.changes([]int64{1, 2, 3}); ch.Uncertain[1] || ch.Rows[1]["orders"] != 1 {
		t.Errorf("finished load: %+v", ch)
	}
	base := &Baseline{Taken: start.Add(2 * time.Second)}
	if _, err := CheckStack(context.Background(), nil, nil, base, []LoadRecord{*rec}); err == nil || !strings.Contains(err.Error(), "before the fingerprint was taken") {
		t.Errorf("a load older than the fingerprint: %v", err)
	}
}
