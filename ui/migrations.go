package ui

import (
	"sort"
	"time"

	"github.com/reshard/reshard/catalog"
)

// finishedShown is how many finished migrations the page lists (newest first), after
// every unfinished one.
const finishedShown = 20

// MigrationView is one migration as the page shows it.
type MigrationView struct {
	catalog.MigrationHead
	// Tenant is the key of the one tenant the range holds, when the stats name it (hash
	// distribution, where the range's bounds are hashes).
	Tenant     string   `json:"tenant,omitempty"`
	Finished   bool     `json:"finished"`
	RollbackTo string   `json:"rollback_to,omitempty"`
	Progress   Progress `json:"progress"`
	// Lag is the catch-up's distance behind the source; only while copying or catching up.
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	Lagging    bool    `json:"lagging"`
	// ETASeconds is the copy's estimated time left; nil when unknown or not copying.
	ETASeconds *float64        `json:"eta_seconds,omitempty"`
	Timings    catalog.Timings `json:"timings"`
	// Window is the cutover window's parts, from the journal's window and the times of the
	// phase changes in the history; empty before the flip or when those events are gone.
	Window    []WindowPart `json:"window,omitempty"`
	Driver    *Driver      `json:"driver,omitempty"` // unfinished migrations only
	Abandoned bool         `json:"abandoned"`        // unfinished and no driver holds its lock
	LastError string       `json:"last_error,omitempty"`
	Created   time.Time    `json:"created"`
	Updated   time.Time    `json:"updated"`
}

// Progress is how far the copy is: Frac of the estimate (-1 when there is none), By says
// what the estimate is: "stats" (rows of the range measured by stats collect),
// "hot key" (the one tenant's measured rows), "chunks" (copy chunks done of planned),
// or "" when none is known yet.
type Progress struct {
	Frac        float64 `json:"frac"`
	By          string  `json:"by,omitempty"`
	RowsCopied  int64   `json:"rows_copied"`
	BytesCopied int64   `json:"bytes_copied"`
	EstRows     int64   `json:"est_rows,omitempty"`
	EstBytes    int64   `json:"est_bytes,omitempty"`
	ChunksDone  int     `json:"chunks_done"`
	ChunksTotal int     `json:"chunks_total"`
}

// WindowPart is a part of the cutover window and its duration.
type WindowPart struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

func migrationViews(src Sources) []MigrationView {
	ms := make([]catalog.Migration, 0, len(src.State.Migrations))
	for _, m := range src.State.Migrations {
		ms = append(ms, m)
	}
	// Unfinished first, oldest first; then finished, newest first.
	sort.Slice(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		if a.Terminal() != b.Terminal() {
			return !a.Terminal()
		}
		if !a.Terminal() {
			return a.Created.Before(b.Created) || (a.Created.Equal(b.Created) && a.ID < b.ID)
		}
		return a.Updated.After(b.Updated) || (a.Updated.Equal(b.Updated) && a.ID < b.ID)
	})
	times := phaseTimes(src.History)
	out := []MigrationView{}
	finished := 0
	for _, m := range ms {
		if m.Terminal() {
			if finished == finishedShown {
				break
			}
			finished++
		}
		out = append(out, migrationView(m, src, times[m.ID]))
	}
	return out
}

func migrationView(m catalog.Migration, src Sources, phases map[string]time.Time) MigrationView {
	v := MigrationView{MigrationHead: m.Head(), Finished: m.Terminal(), RollbackTo: m.RollbackTo, Timings: m.Timings,
		LastError: m.LastError, Created: m.Created, Updated: m.Updated}
	v.Progress = progress(m, src.Stats)
	v.Tenant = tenantOf(m.Range, src.Stats)
	if m.Phase == catalog.PhaseCopying || m.Phase == catalog.PhaseCatchingUp {
		v.Lagging, v.LagBytes, v.LagSeconds = true, m.LagBytes, m.LagSeconds
	}
	if m.Phase == catalog.PhaseCopying {
		started, ok := phases[catalog.PhaseCopying]
		if !ok {
			started = m.Created
		}
		if eta, ok := eta(v.Progress.Frac, src.Now.Sub(started)); ok {
			s := eta.Seconds()
			v.ETASeconds = &s
		}
	}
	v.Window = windowParts(m, phases)
	if !m.Terminal() {
		if d, ok := src.Drivers[m.ID]; ok {
			v.Driver = &d
			v.Abandoned = !d.Held
		}
	}
	return v
}

// progress is the copy's progress against the best estimate there is: the measured rows
// of the range (stats ranges that tile it exactly, or the one hot tenant it holds), else
// the copy's own chunks done of planned. A copy past its phase is done.
func progress(m catalog.Migration, stats *catalog.Stats) Progress {
	p := Progress{Frac: -1, RowsCopied: m.RowsCopied, BytesCopied: m.BytesCopied}
	for _, t := range m.Tables {
		p.ChunksDone += t.ChunksDone
		p.ChunksTotal += t.ChunksTotal
	}
	switch m.Phase {
	case catalog.PhasePlanned, catalog.PhasePreflight:
		p.Frac = 0
		return p
	case catalog.PhaseCopying:
	case catalog.PhaseRollingBack, catalog.PhaseRolledBack, catalog.PhaseCancelled:
		return p
	default:
		p.Frac = 1
		return p
	}
	if rows, bytes, by, ok := estimate(m.Range, stats); ok && rows > 0 {
		p.EstRows, p.EstBytes, p.By = rows, bytes, by
		// Rows written since the stats were taken can carry it past the estimate; it is not
		// done until its phase says so.
		p.Frac = min(float64(m.RowsCopied)/float64(rows), 0.99)
		return p
	}
	if p.ChunksTotal > 0 {
		p.By = "chunks"
		p.Frac = float64(p.ChunksDone) / float64(p.ChunksTotal)
	}
	return p
}

// tenantOf is the key of the one tenant r holds, when r is one key and the stats name it.
func tenantOf(r catalog.KeyRange, stats *catalog.Stats) string {
	if stats == nil || r.HiInf || r.Hi != r.Lo+1 {
		return ""
	}
	for _, hk := range stats.HotKeys {
		if hk.Key == r.Lo {
			return hk.Tenant
		}
	}
	return ""
}

// estimate is the measured size of range r: the sum of the stats ranges that tile it
// exactly, or the measurement of the one tenant a one-key range holds.
func estimate(r catalog.KeyRange, stats *catalog.Stats) (rows, bytes int64, by string, ok bool) {
	if stats == nil {
		return 0, 0, "", false
	}
	if !r.HiInf && r.Hi == r.Lo+1 {
		for _, hk := range stats.HotKeys {
			if hk.Key == r.Lo && hk.Rows > 0 {
				return hk.Rows, hk.Bytes, "hot key", true
			}
		}
	}
	var in []catalog.RangeStats
	for _, rs := range stats.Ranges {
		if r.Covers(rs.Range) {
			in = append(in, rs)
		}
	}
	sort.Slice(in, func(i, j int) bool { return in[i].Range.Lo < in[j].Range.Lo })
	next, open := r.Lo, false
	for _, rs := range in {
		if open || rs.Range.Lo != next {
			return 0, 0, "", false
		}
		rows += rs.Rows
		bytes += rs.Bytes
		next, open = rs.Range.Hi, rs.Range.HiInf
	}
	if len(in) == 0 || open != r.HiInf || (!open && next != r.Hi) {
		return 0, 0, "", false
	}
	return rows, bytes, "stats", true
}

// eta is the time left of work frac done after elapsed, at the same pace; false when
// there is no pace to go by (nothing done yet) or nothing left.
func eta(frac float64, elapsed time.Duration) (time.Duration, bool) {
	if frac <= 0 || frac >= 1 || elapsed <= 0 {
		return 0, false
	}
	return time.Duration(float64(elapsed) * (1 - frac) / frac), true
}

// phaseTimes maps each migration to when it entered each phase, from the history's phase
// events.
func phaseTimes(events []catalog.Event) map[string]map[string]time.Time {
	out := map[string]map[string]time.Time{}
	for _, ev := range events {
		if ev.Kind != catalog.EventPhase || ev.Migration == "" {
			continue
		}
		if out[ev.Migration] == nil {
			out[ev.Migration] = map[string]time.Time{}
		}
		out[ev.Migration][ev.To] = ev.Time
	}
	return out
}

// windowParts splits a flipped migration's cutover window: by the steps its journal
// keeps (without the sequences, which run beside the catch-up), or, for a journal written
// before it kept them, by the times it entered frozen, verifying and flipped: fence and
// drain (frozen to verifying), catch-up, verify and flip (verifying to flipped), and the
// rest (the freeze write before, opening the target after).
func windowParts(m catalog.Migration, phases map[string]time.Time) []WindowPart {
	if len(m.Timings.Window) > 0 {
		parts := make([]WindowPart, 0, len(m.Timings.Window))
		for _, s := range m.Timings.Window {
			if s.Step != "sequences" {
				parts = append(parts, WindowPart{s.Step, s.Seconds})
			}
		}
		return parts
	}
	win := m.Timings.CutoverWindow
	frozen, ok1 := phases[catalog.PhaseFrozen]
	verifying, ok2 := phases[catalog.PhaseVerifying]
	flipped, ok3 := phases[catalog.PhaseFlipped]
	if win <= 0 || !ok1 || !ok2 || !ok3 || verifying.Before(frozen) || flipped.Before(verifying) {
		return nil
	}
	fence := verifying.Sub(frozen).Seconds()
	verify := flipped.Sub(verifying).Seconds()
	rest := win - fence - verify
	if rest < 0 {
		// The phase times come from the catalog writer's clock, the window from the
		// driver's: when they disagree, the parts say nothing reliable.
		return nil
	}
	return []WindowPart{{"fence + drain", fence}, {"catch-up + verify + flip", verify}, {"freeze + open", rest}}
}
