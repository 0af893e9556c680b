package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/mover"
)

// TestProgressOnlyOnATerminal: a move piped or redirected gets no progress bars, so nothing
// but its result reaches the file.
func TestProgressOnlyOnATerminal(t *testing.T) {
	if p := newProgressBars(&bytes.Buffer{}); p != nil {
		t.Error("progress drawn into a buffer")
	}
}

// TestProgressEndsAtFullOnItsOwnLine: drawn into a buffer as on a terminal, a move's
// progress says when each phase (copy, catch-up, cutover, cleanup) starts, each on its own
// line, once however often it is told; the copy's bar ends at 100% even when the estimate
// was too high; and once the move ends, the output ends with a newline, so the summary
// starts on a line of its own.
func TestProgressEndsAtFullOnItsOwnLine(t *testing.T) {
	var buf bytes.Buffer
	bars := drawProgress(&buf)
	m := &catalog.Migration{ID: "m1", Phase: catalog.PhasePlanned}
	bars.Migration(m)
	bar := bars.forID("m1")
	for _, b := range []int64{0, 200, 500, 780} {
		bar(mover.Progress{ID: "m1", Phase: catalog.PhaseCopying, BytesCopied: b, BytesTotal: 1000, RowsCopied: b / 10, ChunksTotal: 4})
	}
	for _, phase := range []string{catalog.PhaseCopying, catalog.PhaseCatchingUp} {
		m.Phase = phase
		bars.Migration(m)
	}
	bar(mover.Progress{ID: "m1", Phase: catalog.PhaseCatchingUp, LagBytes: 2048, AppliedTxs: 3})
	for _, phase := range []string{catalog.PhaseFrozen, catalog.PhaseVerifying, catalog.PhaseCatchingUp, catalog.PhaseFrozen,
		catalog.PhaseFlipped, catalog.PhaseCleaningUp, catalog.PhaseDone} {
		m.Phase = phase
		bars.Migration(m)
	}
	bars.finish()
	out := buf.String()
	lines := regexp.MustCompile(`m1: (copy|catch-up|cutover|cleanup) started`).FindAllString(out, -1)
	want := []string{"m1: copy started", "m1: catch-up started", "m1: cutover started", "m1: cleanup started"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("phase lines %q, want %q\n%q", lines, want, out)
	}
	for _, l := range want {
		if !regexp.MustCompile(`(^|\n)` + l + `\n`).MatchString(out) {
			t.Errorf("%q is not on a line of its own:\n%q", l, out)
		}
	}
	copyEnd := strings.Index(out, "m1: catch-up started")
	if copyEnd < 0 || !strings.Contains(out[:copyEnd], "100%") {
		t.Errorf("the copy's bar did not reach 100%% before the catch-up started:\n%q", out)
	}
	t.Logf("%q", out)
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("the progress does not end its line, the summary would start on it:\n%q", out)
	}
}
