package ui

import (
	"encoding/json"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// A history event reaches the page with its range as text, exact for any int64, in the
// JSON key "range" (the catalog's range object never shows), and every other field as the
// catalog wrote it.
func TestHistoryViewRangeIsText(t *testing.T) {
	r := catalog.NewRange(9007199254740993, 9007199254740995) // past 2^53: a JSON number would round
	events := []catalog.Event{
		{Seq: 1, Kind: catalog.EventConfig, Detail: "no range"},
		{Seq: 2, Kind: catalog.EventFlip, Range: &r, From: "s1", To: "s2", Epoch: 3, Migration: "m1"},
	}
	b, err := json.Marshal(historyViews(events, 10))
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0]["range"] != r.String() || got[0]["seq"] != 2.0 || got[0]["to"] != "s2" || got[0]["migration"] != "m1" {
		t.Errorf("newest event = %s; want seq 2 with range %q as text", b, r.String())
	}
	if _, ok := got[1]["range"]; ok || got[1]["detail"] != "no range" {
		t.Errorf("event without a range = %v; want no range key and its detail", got[1])
	}
}
