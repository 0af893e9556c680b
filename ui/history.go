package ui

import (
	"github.com/reshard/reshard/catalog"
)

// historyShown is how many history events the page lists; historyRead how many the feed
// reads, the older ones only for the phase times of recent migrations' windows.
const (
	historyShown = 50
	historyRead  = 500
)

// EventView is one history event as the page shows it: the catalog's event with its range
// as text, exact for any int64 (the page's JSON numbers are not, past 2^53). The range's
// field hides the event's own in JSON.
type EventView struct {
	catalog.Event
	Range string `json:"range,omitempty"`
}

// historyViews are the last n events, newest first.
func historyViews(events []catalog.Event, n int) []EventView {
	out := []EventView{}
	for i := len(events) - 1; i >= 0 && len(out) < n; i-- {
		ev := events[i]
		v := EventView{Event: ev}
		if ev.Range != nil {
			v.Range = ev.Range.String()
		}
		out = append(out, v)
	}
	return out
}
