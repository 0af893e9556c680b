package ui

import (
	"time"

	"github.com/reshard/reshard/catalog"
)

// historyShown is how many history events the page lists; historyRead how many the feed
// reads, the older ones only for the phase times of recent migrations' windows.
const (
	historyShown = 50
	historyRead  = 500
)

// EventView is one history event; the range is text, exact for any int64.
type EventView struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Range     string    `json:"range,omitempty"`
	Shard     string    `json:"shard,omitempty"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to,omitempty"`
	Epoch     int64     `json:"epoch,omitempty"`
	Migration string    `json:"migration,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// historyViews are the last n events, newest first.
func historyViews(events []catalog.Event, n int) []EventView {
	out := []EventView{}
	for i := len(events) - 1; i >= 0 && len(out) < n; i-- {
		ev := events[i]
		v := EventView{Seq: ev.Seq, Time: ev.Time, Kind: ev.Kind, Shard: ev.Shard, From: ev.From, To: ev.To,
			Epoch: ev.Epoch, Migration: ev.Migration, Detail: ev.Detail}
		if ev.Range != nil {
			v.Range = ev.Range.String()
		}
		out = append(out, v)
	}
	return out
}
